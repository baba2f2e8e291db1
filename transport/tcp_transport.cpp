// TCP transport and fingerprint probe: TLS over Boost.Asio with a private io_context. The public
// calls are synchronous, but every step is an asynchronous operation run against a deadline, so a
// silent or half-dead server costs at most the configured timeouts, never a hang.
#include <poll.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <splitfs/errors.hpp>
#include <string>
#include <vector>

#include "common/watermark.hpp"
#include "protocol/codec.hpp"
#include "tls/identity.hpp"
#include "transport/errors.hpp"
#include "transport/transport.hpp"

namespace splitfs::transport {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
using Stream = ssl::stream<tcp::socket>;

// Completion state of one asynchronous operation. Shared with its handler, so a handler that runs
// late (after a timeout gave up on it) writes into a live object.
struct Pending {
  bool done = false;
  error_code ec;
  std::size_t bytes = 0;
  tcp::resolver::results_type resolved;
};

// Sockets drop their operations quickly once closed; this bounds the wait for those handlers.
constexpr auto kDrainLimit = std::chrono::seconds(1);
constexpr std::size_t kReadChunk = 256u << 10;

std::string describe(const error_code& ec) {
  if (ec == asio::error::connection_refused) {
    return "connection refused";
  }
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated) {
    return "closed by the server";
  }
  return ec.message();
}

// One TLS connection to a server, opened and used under deadlines.
class TlsChannel {
 public:
  TlsChannel(std::string kind, const std::string& host, std::uint16_t port,
             std::string expected_pin, const ClientCertificate& client = {})
      : kind_(std::move(kind)),
        host_(detail::strip_brackets(host)),
        port_(port),
        address_(Endpoint{kind_, host, port, {}}.address()),
        ctx_(ssl::context::tls_client) {
    pin_.expected = std::move(expected_pin);
    tls::pin_server_certificate(ctx_.native_handle(), &pin_);
    if (!client.cert_file.empty()) {
      try {
        tls::present_client_certificate(ctx_.native_handle(), client.cert_file, client.key_file);
      } catch (const tls::TlsError& e) {
        throw ConfigError(std::string("cannot use this client's certificate: ") + e.what());
      }
    }
  }

  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;
  ~TlsChannel() { close(); }

  const std::string& kind() const { return kind_; }
  const std::string& address() const { return address_; }
  const tls::Pin& pin() const { return pin_; }
  bool is_open() const { return stream_ != nullptr; }
  // Whether the last failure was a stall (the server may still be working on the request).
  bool stalled() const { return stalled_; }

  // Resolves, connects and completes the TLS handshake, all within `timeout`. Throws
  // ServerUnavailable, AuthError (pin mismatch) or ServerError (not a TLS peer).
  void open(std::chrono::milliseconds timeout) {
    close();
    stalled_ = false;
    receive_low_watermark_ = 1;
    const auto deadline = Clock::now() + timeout;
    const std::vector<tcp::endpoint> endpoints = resolve(deadline, timeout);

    auto stream = std::make_shared<Stream>(ioc_, ctx_);
    auto pending = std::make_shared<Pending>();
    asio::async_connect(stream->lowest_layer(), endpoints,
                        [pending, stream](const error_code& ec, const tcp::endpoint&) {
                          pending->ec = ec;
                          pending->done = true;
                        });
    if (!wait(pending, deadline, [&stream] { close_socket(*stream); })) {
      detail::throw_connect_timeout(kind_, address_, timeout);
    }
    if (pending->ec) {
      detail::throw_unreachable(kind_, address_, describe(pending->ec));
    }
    error_code ignored;
    stream->lowest_layer().set_option(tcp::no_delay(true), ignored);

    // SNI carries host names only; RFC 6066 forbids address literals there.
    error_code not_an_address;
    asio::ip::make_address(host_, not_an_address);
    if (not_an_address) {
      SSL_set_tlsext_host_name(stream->native_handle(), host_.c_str());
    }
    pin_.presented.clear();
    pending = std::make_shared<Pending>();
    stream->async_handshake(ssl::stream_base::client, [pending, stream](const error_code& ec) {
      pending->ec = ec;
      pending->done = true;
    });
    if (!wait(pending, deadline, [&stream] { close_socket(*stream); })) {
      detail::throw_connect_timeout(kind_, address_, timeout);
    }
    if (!pin_.presented.empty() && !pin_.expected.empty() && pin_.presented != pin_.expected) {
      detail::throw_pin_mismatch(kind_, address_, pin_.presented, pin_.expected);
    }
    if (pending->ec) {
      // A peer that closes in the middle of the handshake went away (a server stopping or killed,
      // a cut connection); any other TLS failure means it does not speak our TLS.
      if (pending->ec.category() == asio::error::get_ssl_category() &&
          pending->ec != ssl::error::stream_truncated) {
        throw ServerError("TLS handshake with " + detail::server_label(kind_, address_) +
                          " failed (" + pending->ec.message() +
                          ") - is this the right address and port?");
      }
      detail::throw_connection_lost(kind_, address_, describe(pending->ec));
    }
    stream_ = std::move(stream);
  }

  // True when the server has closed the connection (or sent something unasked) since the last
  // reply: the connection must not carry another request.
  bool peer_closed() {
    if (!stream_) {
      return true;
    }
    pollfd fd{};
    fd.fd = stream_->lowest_layer().native_handle();
    fd.events = POLLIN | POLLRDHUP;
    return ::poll(&fd, 1, 0) != 0;
  }

  // Writes the pieces in order, as one message; fails when no byte could be written for `idle`.
  void write(std::span<const ByteView> pieces, std::chrono::milliseconds idle) {
    auto stream = stream_;
    auto pending = std::make_shared<Pending>();
    last_progress_ = Clock::now();
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(pieces.size());
    for (const ByteView piece : pieces)
      buffers.emplace_back(piece.data(), piece.size());
    asio::async_write(
        *stream, buffers,
        [this](const error_code& ec, std::size_t) -> std::size_t {
          last_progress_ = Clock::now();
          return ec ? 0 : kReadChunk;
        },
        [pending, stream](const error_code& ec, std::size_t n) {
          pending->ec = ec;
          pending->bytes = n;
          pending->done = true;
        });
    finish(pending, idle);
  }

  // Before a read: `rest` more bytes of the reply under way are still to come (0: unknown).
  void expect(std::size_t rest) {
    if (stream_)
      set_receive_watermark(stream_->lowest_layer(), rest, receive_low_watermark_);
  }

  // Reads what is available (at least one byte); fails when nothing arrives for `idle`.
  std::size_t read_some(MutableByteView buffer, std::chrono::milliseconds idle) {
    auto stream = stream_;
    auto pending = std::make_shared<Pending>();
    last_progress_ = Clock::now();
    stream->async_read_some(asio::buffer(buffer.data(), buffer.size()),
                            [pending, stream](const error_code& ec, std::size_t n) {
                              pending->ec = ec;
                              pending->bytes = n;
                              pending->done = true;
                            });
    finish(pending, idle);
    return pending->bytes;
  }

  // Drops the connection without waiting for the server. Handlers still queued keep the stream
  // alive until they run or the io_context is destroyed.
  void close() {
    if (stream_) {
      close_socket(*stream_);
      stream_.reset();
    }
  }

 private:
  static void close_socket(Stream& stream) {
    error_code ignored;
    stream.lowest_layer().shutdown(tcp::socket::shutdown_both, ignored);
    stream.lowest_layer().close(ignored);
  }

  std::vector<tcp::endpoint> resolve(Clock::time_point deadline,
                                     std::chrono::milliseconds timeout) {
    error_code not_an_address;
    const asio::ip::address literal = asio::ip::make_address(host_, not_an_address);
    if (!not_an_address) {
      return {tcp::endpoint(literal, port_)};
    }
    auto pending = std::make_shared<Pending>();
    resolver_.async_resolve(host_, std::to_string(port_),
                            [pending](const error_code& ec, tcp::resolver::results_type results) {
                              pending->ec = ec;
                              pending->resolved = std::move(results);
                              pending->done = true;
                            });
    // The lookup runs on the resolver's own thread and cannot be interrupted: on timeout it is
    // abandoned, and its handler later completes into the shared Pending.
    if (!wait(
            pending, deadline, [this] { resolver_.cancel(); }, false)) {
      detail::throw_connect_timeout(kind_, address_, timeout);
    }
    if (pending->ec || pending->resolved.empty()) {
      detail::throw_unreachable(kind_, address_, "unknown host name");
    }
    std::vector<tcp::endpoint> endpoints;
    for (const auto& entry : pending->resolved) {
      endpoints.push_back(entry.endpoint());
    }
    return endpoints;
  }

  // Completes a read or write on the open stream: on a stall or an error the connection is closed
  // and ServerUnavailable thrown.
  void finish(const std::shared_ptr<Pending>& pending, std::chrono::milliseconds idle) {
    auto stream = stream_;
    const bool in_time = wait_idle(pending, idle, [&stream] { close_socket(*stream); });
    if (!in_time) {
      close();
      stalled_ = true;
      detail::throw_stalled(kind_, address_, idle);
    }
    if (pending->ec) {
      close();
      const std::string why = describe(pending->ec);
      // TLS 1.3 clients learn that their certificate was refused only at their first read.
      if (detail::refused_client_certificate(why))
        detail::throw_client_certificate_refused(kind_, address_);
      detail::throw_connection_lost(kind_, address_, why);
    }
  }

  // Runs the io_context until `pending` completes or `deadline` passes. On timeout, calls `cancel`
  // and (if `drain`) waits briefly for the cancelled handler, then returns false.
  bool wait(const std::shared_ptr<Pending>& pending, Clock::time_point deadline,
            const std::function<void()>& cancel, bool drain = true) {
    while (!pending->done) {
      if (Clock::now() >= deadline) {
        cancel();
        if (drain) {
          run_until(pending, Clock::now() + kDrainLimit);
        }
        return false;
      }
      run_until(pending, deadline);
    }
    return true;
  }

  // Like wait(), but the deadline moves forward whenever bytes move (last_progress_).
  bool wait_idle(const std::shared_ptr<Pending>& pending, std::chrono::milliseconds idle,
                 const std::function<void()>& cancel) {
    while (!pending->done) {
      if (Clock::now() >= last_progress_ + idle) {
        cancel();
        run_until(pending, Clock::now() + kDrainLimit);
        return false;
      }
      run_until(pending, last_progress_ + idle);
    }
    return true;
  }

  void run_until(const std::shared_ptr<Pending>& pending, Clock::time_point deadline) {
    while (!pending->done && Clock::now() < deadline) {
      if (ioc_.stopped()) {
        ioc_.restart();
      }
      if (ioc_.run_one_until(deadline) == 0 && ioc_.stopped()) {
        // No work left although the operation is not done: nothing could ever complete it.
        pending->ec = asio::error::operation_aborted;
        pending->done = true;
      }
    }
  }

  std::string kind_;
  std::string host_;
  std::uint16_t port_;
  std::string address_;
  // Declaration order is destruction order in reverse: the stream goes before the context and
  // the io_context, the pin (referenced by the context) last.
  tls::Pin pin_;
  asio::io_context ioc_;
  ssl::context ctx_;
  tcp::resolver resolver_{ioc_};
  std::shared_ptr<Stream> stream_;
  Clock::time_point last_progress_;
  bool stalled_ = false;
  int receive_low_watermark_ = 1;  // the socket's, as last set by expect()
};

class TcpTransport final : public Transport {
 public:
  TcpTransport(const Endpoint& endpoint, const Timeouts& timeouts, const ClientCertificate& client)
      : endpoint_(endpoint),
        timeouts_(timeouts),
        channel_(endpoint.kind, endpoint.host, endpoint.port, endpoint.fingerprint, client) {
    if (endpoint_.fingerprint.empty()) {
      throw ConfigError("no certificate fingerprint is pinned for the " +
                        detail::server_label(endpoint_.kind, channel_.address()) +
                        "; run splitfs init first");
    }
  }

  protocol::Reply call(const protocol::Request& request) override {
    // Shares go from the request to TLS as they lie, not copied into a frame first.
    const protocol::Gathered gathered = protocol::gather_request_frame(request);
    const std::vector<ByteView> frame = gathered.pieces();
    const protocol::Op op = protocol::op_of(request);
    bool reused = channel_.is_open();
    if (reused && channel_.peer_closed()) {
      channel_.close();
      reused = false;
    }
    for (;;) {
      if (!channel_.is_open()) {
        connect();
      }
      std::size_t received = 0;
      try {
        return exchange(op, frame, received);
      } catch (const ServerUnavailable&) {
        channel_.close();
        // A kept connection the server had already dropped (idle timeout, restart): the request
        // never reached it, so sending it again on a fresh connection is safe. Not after a stall:
        // the server may still be working on it.
        if (!reused || received > 0 || channel_.stalled()) {
          throw;
        }
        reused = false;
      } catch (...) {
        channel_.close();
        throw;
      }
    }
  }

  const Endpoint& endpoint() const override { return endpoint_; }

 private:
  void connect() {
    channel_.open(timeouts_.connect);
    std::size_t received = 0;
    protocol::Reply reply;
    try {
      const Bytes hello = protocol::encode_request_frame(protocol::Hello{});
      reply = exchange(protocol::Op::hello, std::array{ByteView(hello)}, received);
    } catch (...) {
      channel_.close();
      throw;
    }
    if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
      channel_.close();
      const std::string refused =
          detail::server_label(endpoint_.kind, channel_.address()) + " refused the session: ";
      if (error->status == protocol::Status::unauthorized)
        throw AuthError(refused + error->message);
      if (error->status == protocol::Status::busy)
        throw ServerUnavailable(endpoint_.kind, channel_.address(), refused + error->message);
      throw ServerError(refused + error->message);
    }
  }

  // Sends one request frame and reads exactly one reply frame. `received` counts reply bytes, so
  // the caller knows whether the server had started answering when a failure hit.
  protocol::Reply exchange(protocol::Op op, std::span<const ByteView> frame,
                           std::size_t& received) {
    channel_.write(frame, timeouts_.idle);
    protocol::FrameParser parser;
    for (;;) {
      if (std::optional<protocol::Frame> reply = parser.next()) {
        if (parser.buffered() != 0) {
          detail::throw_bad_reply(endpoint_.kind, channel_.address(),
                                  "more than one reply to one request");
        }
        return decode(op, *reply);
      }
      // Received in place: a large reply's payload goes straight from TLS into its frame.
      channel_.expect(parser.missing());
      const std::size_t n = channel_.read_some(parser.prepare(kReadChunk), timeouts_.idle);
      received += n;
      if (const std::error_code ec = parser.commit(n)) {
        if (ec == protocol::DecodeErrc::too_large) {
          detail::throw_reply_too_large(endpoint_.kind, channel_.address());
        }
        detail::throw_bad_reply(endpoint_.kind, channel_.address(), ec.message());
      }
    }
  }

  protocol::Reply decode(protocol::Op op, const protocol::Frame& frame) const {
    protocol::Reply reply;
    if (const std::error_code ec = protocol::decode_reply_frame(op, frame, reply)) {
      detail::throw_bad_reply(endpoint_.kind, channel_.address(), ec.message());
    }
    return reply;
  }

  Endpoint endpoint_;
  Timeouts timeouts_;
  TlsChannel channel_;
};

}  // namespace

std::unique_ptr<Transport> make_tcp_transport(const Endpoint& endpoint, const Timeouts& timeouts,
                                              const ClientCertificate& client) {
  return std::make_unique<TcpTransport>(endpoint, timeouts, client);
}

std::string probe_fingerprint(const std::string& kind, const std::string& host, std::uint16_t port,
                              std::chrono::milliseconds timeout) {
  TlsChannel channel(kind, host, port, {});
  channel.open(timeout);
  if (channel.pin().presented.empty()) {
    throw ServerError("TLS handshake with " + detail::server_label(kind, channel.address()) +
                      " completed without a certificate");
  }
  return channel.pin().presented;
}

}  // namespace splitfs::transport
