#include "tests/support/raw_tls.hpp"

#include <stdexcept>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

namespace splitfs::testing {

namespace asio = boost::asio;
using boost::system::error_code;

struct RawTls::Connection {
  Connection(const ServerProcess& server, std::string fingerprint, const tls::Identity* identity)
      : pin{std::move(fingerprint), {}},
        ssl(context(pin, identity)),
        stream(io, ssl),
        endpoint(asio::ip::make_address(server.host()), server.port()) {}

  // Starts one asynchronous operation and runs it to its end or the deadline; a late one is
  // cut off by closing the socket.
  template <typename Start>
  error_code run(Start&& start, std::size_t* bytes = nullptr) {
    bool done = false;
    error_code result;
    start([&](error_code ec, auto... rest) {
      done = true;
      result = ec;
      if constexpr (sizeof...(rest) == 1) {
        if (bytes)
          *bytes = (rest, ...);
      }
    });
    io.restart();
    io.run_for(kDeadline);
    if (!done) {
      error_code ignored;
      stream.lowest_layer().close(ignored);
      io.restart();
      io.run_for(std::chrono::seconds(1));
      return asio::error::timed_out;
    }
    return result;
  }

  error_code read_some(MutableByteView into, std::size_t& received) {
    return run(
        [&](auto handler) {
          stream.async_read_some(asio::buffer(into.data(), into.size()), handler);
        },
        &received);
  }

  // The pin is set before the stream exists: an SSL object copies its context's verify mode.
  static asio::ssl::context context(tls::Pin& pin, const tls::Identity* identity) {
    asio::ssl::context ctx(asio::ssl::context::tls_client);
    tls::pin_server_certificate(ctx.native_handle(), &pin);
    if (identity != nullptr)
      tls::present_client_certificate(ctx.native_handle(), identity->cert_file, identity->key_file);
    return ctx;
  }

  asio::io_context io;
  tls::Pin pin;
  asio::ssl::context ssl;
  asio::ssl::stream<asio::ip::tcp::socket> stream;
  asio::ip::tcp::endpoint endpoint;
};

RawTls::RawTls(const ServerProcess& server, const tls::Identity* identity)
    : connection_(std::make_unique<Connection>(server, server.fingerprint(), identity)) {}

RawTls::RawTls(const ServerProcess& server, std::string fingerprint)
    : connection_(std::make_unique<Connection>(server, std::move(fingerprint), nullptr)) {}

RawTls::~RawTls() = default;

error_code RawTls::connect() {
  Connection& c = *connection_;
  if (error_code ec =
          c.run([&](auto handler) { c.stream.lowest_layer().async_connect(c.endpoint, handler); }))
    return ec;
  return c.run(
      [&](auto handler) { c.stream.async_handshake(asio::ssl::stream_base::client, handler); });
}

error_code RawTls::send(ByteView bytes) {
  Connection& c = *connection_;
  return c.run([&](auto handler) { asio::async_write(c.stream, asio::buffer(bytes), handler); });
}

std::optional<protocol::Frame> RawTls::read_frame() {
  Bytes chunk(std::size_t{64} << 10);
  for (;;) {
    if (auto frame = parser_.next())
      return frame;
    std::size_t received = 0;
    if (error_code ec = connection_->read_some(chunk, received)) {
      last_error_ = ec;
      return std::nullopt;
    }
    if (std::error_code ec = parser_.feed(ByteView(chunk).first(received)))
      throw std::runtime_error("the server sent a malformed frame: " + ec.message());
  }
}

std::optional<protocol::Reply> RawTls::read_reply(protocol::Op op) {
  const std::optional<protocol::Frame> frame = read_frame();
  if (!frame)
    return std::nullopt;
  protocol::Reply reply;
  if (std::error_code ec = protocol::decode_reply_frame(op, *frame, reply))
    throw std::runtime_error("the server's reply does not decode: " + ec.message());
  return reply;
}

std::optional<protocol::Reply> RawTls::call(const protocol::Request& request) {
  if (send(protocol::encode_request_frame(request)))
    return std::nullopt;
  return read_reply(protocol::op_of(request));
}

std::string RawTls::read_all() {
  std::string text;
  Bytes chunk(4096);
  for (;;) {
    std::size_t received = 0;
    const error_code ec = connection_->read_some(chunk, received);
    text.append(reinterpret_cast<const char*>(chunk.data()), received);
    if (ec) {
      last_error_ = ec;
      return text;
    }
  }
}

bool RawTls::closed_by_server() {
  return !read_frame() && last_error_ != asio::error::timed_out;
}

const tls::Pin& RawTls::pin() const {
  return connection_->pin;
}

}  // namespace splitfs::testing
