// The original TCP server's two operations over plain TCP with Boost.Asio, one connection per
// operation. Every field is padded with spaces to 1024 bytes:
//   upload:   "upload" | name | size in decimal | the bytes           (no reply; the server closes)
//   download: "download" | name  ->  size in decimal | the bytes, or the text "File not found"
// The server reads each field and the body with single recv() calls, so a body can arrive cut
// and nothing says so: every upload is read back and compared, and sent again if it differs. The
// server closes each connection once done; the client waits for that, which also tells it when an
// upload has been stored.
// Each step runs asynchronously against a deadline on a private io_context, so a silent or
// stopped server costs at most the configured timeouts.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <splitfs/errors.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "transport/errors.hpp"
#include "transport/legacy_store.hpp"
#include "transport/legacy_transport.hpp"

namespace splitfs::transport::legacy {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
using Socket = std::shared_ptr<tcp::socket>;

constexpr std::size_t kFieldBytes = 1024;
constexpr std::string_view kNotFound = "File not found";
constexpr int kPutAttempts = 3;
// Whatever a server says after an upload is read and dropped, up to this bound.
constexpr std::size_t kMaxUploadReplyBytes = 64u << 10;
// How long a download waits for the server to close once the whole piece has arrived.
constexpr std::chrono::milliseconds kCloseWait{500};
// Cancelled operations complete quickly once their socket is closed; this bounds that wait.
constexpr auto kDrainLimit = std::chrono::seconds(1);

// Completion state of one asynchronous operation, shared with its handler so that a handler that
// runs after its caller gave up writes into a live object.
struct Pending {
  bool done = false;
  error_code ec;
  std::size_t bytes = 0;
  tcp::resolver::results_type resolved;
};

void append_field(Bytes& out, std::string_view text) {
  out.insert(out.end(), text.begin(), text.end());
  out.insert(out.end(), kFieldBytes - text.size(), ' ');
}

std::string_view trimmed(ByteView field) {
  // Spaces pad the fields; tolerate NULs and line ends as well.
  constexpr std::string_view kPadding(" \t\r\n\0", 5);
  std::string_view text(reinterpret_cast<const char*>(field.data()), field.size());
  const auto first = text.find_first_not_of(kPadding);
  if (first == std::string_view::npos)
    return {};
  const auto last = text.find_last_not_of(kPadding);
  return text.substr(first, last - first + 1);
}

std::string describe(const error_code& ec) {
  if (ec == asio::error::connection_refused)
    return "connection refused";
  if (ec == asio::error::eof)
    return "closed by the server";
  return ec.message();
}

class TcpPieceStore final : public PieceStore {
 public:
  TcpPieceStore(const Endpoint& endpoint, const Timeouts& timeouts)
      : endpoint_(endpoint),
        address_(endpoint.address()),
        host_(detail::strip_brackets(endpoint.host)),
        timeouts_(timeouts) {}

  void put(const std::string& name, ByteView data) override {
    for (int attempt = 1;; ++attempt) {
      if (upload(name, data)) {
        const std::optional<Bytes> stored = download(name);
        if (stored && std::equal(stored->begin(), stored->end(), data.begin(), data.end()))
          return;
      }
      if (attempt == kPutAttempts) {
        throw ServerError(detail::server_label(endpoint_.kind, address_) + " did not keep a " +
                          std::to_string(data.size()) + "-byte upload intact in " +
                          std::to_string(kPutAttempts) +
                          " attempts (it may be cutting what it receives)");
      }
    }
  }

  std::optional<Bytes> get(const std::string& name) override { return download(name); }

  const Endpoint& endpoint() const override { return endpoint_; }

 private:
  // Sends one upload and waits for the server to close the connection. False when the server
  // reset it instead, which it does when it closes with part of the upload unread.
  bool upload(const std::string& name, ByteView data) {
    Bytes message;
    message.reserve(3 * kFieldBytes + data.size());
    append_field(message, "upload");
    append_field(message, name);
    append_field(message, std::to_string(data.size()));
    message.insert(message.end(), data.begin(), data.end());
    const Socket socket = connect();
    write_all(socket, message);
    Bytes buffer(4096);
    std::size_t received = 0;
    for (;;) {
      const auto [n, ec] = receive(socket, buffer);
      if (ec == asio::error::eof)
        return true;
      if (ec == asio::error::connection_reset)
        return false;
      if (ec)
        detail::throw_connection_lost(endpoint_.kind, address_, describe(ec));
      received += n;
      if (received > kMaxUploadReplyBytes)
        detail::throw_bad_reply(endpoint_.kind, address_, "an upload drew an endless reply");
    }
  }

  std::optional<Bytes> download(const std::string& name) {
    Bytes message;
    append_field(message, "download");
    append_field(message, name);
    const Socket socket = connect();
    write_all(socket, message);

    // The size field (or "File not found", possibly unpadded, then the end of the connection).
    constexpr std::size_t kMaxReply = kFieldBytes + kPieceBytes;
    Bytes reply;
    Bytes buffer(kMaxReply + 1);
    bool closed = false;
    while (reply.size() < kFieldBytes && !closed)
      closed = !read_into(socket, buffer, reply, kMaxReply);
    const std::string_view field =
        trimmed(ByteView(reply).first(std::min(reply.size(), kFieldBytes)));
    if (field == kNotFound)
      return std::nullopt;
    if (reply.size() < kFieldBytes)
      detail::throw_bad_reply(endpoint_.kind, address_, "the reply ended inside its size field");
    if (field.empty() || field.size() > 7 ||
        field.find_first_not_of("0123456789") != std::string_view::npos) {
      detail::throw_bad_reply(endpoint_.kind, address_, "the size field is not a number");
    }
    const std::size_t size = std::stoul(std::string(field));
    if (size > kPieceBytes) {
      throw ServerError(detail::server_label(endpoint_.kind, address_) + " announced " +
                        std::to_string(size) + " bytes for a piece of at most " +
                        std::to_string(kPieceBytes));
    }
    while (reply.size() < kFieldBytes + size) {
      if (closed || !read_into(socket, buffer, reply, kMaxReply)) {
        detail::throw_connection_lost(endpoint_.kind, address_,
                                      "closed before the whole piece arrived");
      }
    }
    if (reply.size() != kFieldBytes + size)
      detail::throw_bad_reply(endpoint_.kind, address_, "more bytes than announced");
    // Let the server close first, as it does right after sending: the side that closes first
    // keeps the port in TIME_WAIT, and a store opens a connection per piece.
    if (!closed)
      receive_within(socket, buffer, kCloseWait);
    return Bytes(reply.begin() + kFieldBytes, reply.end());
  }

  // Appends what arrives to `reply`; false at the end of the connection. Throws on a reset,
  // a stall, or a reply growing past `limit`.
  bool read_into(const Socket& socket, Bytes& buffer, Bytes& reply, std::size_t limit) {
    const auto [n, ec] = receive(socket, buffer);
    if (ec == asio::error::eof)
      return false;
    if (ec)
      detail::throw_connection_lost(endpoint_.kind, address_, describe(ec));
    if (n > limit - reply.size())
      detail::throw_bad_reply(endpoint_.kind, address_, "a reply larger than a piece");
    reply.insert(reply.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
    return true;
  }

  Socket connect() {
    const auto deadline = Clock::now() + timeouts_.connect;
    const std::vector<tcp::endpoint>& endpoints = resolve(deadline);
    auto socket = std::make_shared<tcp::socket>(ioc_);
    auto pending = std::make_shared<Pending>();
    asio::async_connect(*socket, endpoints,
                        [pending, socket](const error_code& ec, const tcp::endpoint&) {
                          pending->ec = ec;
                          pending->done = true;
                        });
    if (!wait(pending, deadline, [&socket] { close(*socket); }))
      detail::throw_connect_timeout(endpoint_.kind, address_, timeouts_.connect);
    if (pending->ec)
      detail::throw_unreachable(endpoint_.kind, address_, describe(pending->ec));
    error_code ignored;
    socket->set_option(tcp::no_delay(true), ignored);
    return socket;
  }

  // Resolved once and kept: a store makes one connection per piece.
  const std::vector<tcp::endpoint>& resolve(Clock::time_point deadline) {
    if (!resolved_.empty())
      return resolved_;
    error_code not_an_address;
    const asio::ip::address literal = asio::ip::make_address(host_, not_an_address);
    if (!not_an_address) {
      resolved_.emplace_back(literal, endpoint_.port);
      return resolved_;
    }
    auto pending = std::make_shared<Pending>();
    resolver_.async_resolve(host_, std::to_string(endpoint_.port),
                            [pending](const error_code& ec, tcp::resolver::results_type results) {
                              pending->ec = ec;
                              pending->resolved = std::move(results);
                              pending->done = true;
                            });
    // The lookup runs on the resolver's own thread and cannot be interrupted: on timeout it is
    // abandoned, and its handler later completes into the shared Pending.
    if (!wait(
            pending, deadline, [this] { resolver_.cancel(); }, false)) {
      detail::throw_connect_timeout(endpoint_.kind, address_, timeouts_.connect);
    }
    if (pending->ec || pending->resolved.empty())
      detail::throw_unreachable(endpoint_.kind, address_, "unknown host name");
    for (const auto& entry : pending->resolved)
      resolved_.push_back(entry.endpoint());
    return resolved_;
  }

  // Writes all of `data`; the messages are a few KiB, so the idle limit bounds the whole write.
  void write_all(const Socket& socket, ByteView data) {
    auto pending = std::make_shared<Pending>();
    asio::async_write(*socket, asio::buffer(data.data(), data.size()),
                      [pending, socket](const error_code& ec, std::size_t n) {
                        pending->ec = ec;
                        pending->bytes = n;
                        pending->done = true;
                      });
    if (!wait(pending, Clock::now() + timeouts_.idle, [&socket] { close(*socket); }))
      detail::throw_stalled(endpoint_.kind, address_, timeouts_.idle);
    if (pending->ec)
      detail::throw_connection_lost(endpoint_.kind, address_, describe(pending->ec));
  }

  // What the next read brings (eof at the end of the connection); throws after `idle` of silence.
  std::pair<std::size_t, error_code> receive(const Socket& socket, MutableByteView buffer) {
    auto result = receive_within(socket, buffer, timeouts_.idle);
    if (!result)
      detail::throw_stalled(endpoint_.kind, address_, timeouts_.idle);
    return *result;
  }

  // Like receive(), but nullopt (and the connection closed) after `limit` of silence.
  std::optional<std::pair<std::size_t, error_code>> receive_within(
      const Socket& socket, MutableByteView buffer, std::chrono::milliseconds limit) {
    auto pending = std::make_shared<Pending>();
    socket->async_read_some(asio::buffer(buffer.data(), buffer.size()),
                            [pending, socket](const error_code& ec, std::size_t n) {
                              pending->ec = ec;
                              pending->bytes = n;
                              pending->done = true;
                            });
    if (!wait(pending, Clock::now() + limit, [&socket] { close(*socket); }))
      return std::nullopt;
    return std::make_pair(pending->bytes, pending->ec);
  }

  static void close(tcp::socket& socket) {
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }

  // Runs the io_context until `pending` completes or `deadline` passes. On timeout, calls `cancel`
  // and (if `drain`) waits briefly for the cancelled handler, then returns false.
  bool wait(const std::shared_ptr<Pending>& pending, Clock::time_point deadline,
            const std::function<void()>& cancel, bool drain = true) {
    run_until(pending, deadline);
    if (pending->done)
      return true;
    cancel();
    if (drain)
      run_until(pending, Clock::now() + kDrainLimit);
    return false;
  }

  void run_until(const std::shared_ptr<Pending>& pending, Clock::time_point deadline) {
    while (!pending->done && Clock::now() < deadline) {
      if (ioc_.stopped())
        ioc_.restart();
      if (ioc_.run_one_until(deadline) == 0 && ioc_.stopped()) {
        // No work left although the operation is not done: nothing could ever complete it.
        pending->ec = asio::error::operation_aborted;
        pending->done = true;
      }
    }
  }

  Endpoint endpoint_;
  std::string address_;
  std::string host_;
  Timeouts timeouts_;
  std::vector<tcp::endpoint> resolved_;
  asio::io_context ioc_;
  tcp::resolver resolver_{ioc_};
};

}  // namespace

std::unique_ptr<PieceStore> make_tcp_piece_store(const Endpoint& endpoint,
                                                 const Timeouts& timeouts) {
  return std::make_unique<TcpPieceStore>(endpoint, timeouts);
}

}  // namespace splitfs::transport::legacy
