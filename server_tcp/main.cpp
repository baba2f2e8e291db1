// splitfs-tcp-server: the TCP door. The framed protocol of protocol/codec.hpp over TLS 1.3.
//
// The first request on a connection must be a Hello this server accepts; anything else gets an
// error reply and the connection closes. Pipelined requests are answered one by one, in order.
// A frame that announces more than protocol::kMaxMessageBytes or does not decode gets an error
// reply, then the connection closes; 30 s without a byte moving closes it too.
#include <array>
#include <cstdint>
#include <variant>

#include <boost/asio/buffer.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/codec.hpp"
#include "service/server_main.hpp"

namespace {

using namespace splitfs;
using service::asio::awaitable;
using service::asio::use_awaitable;
namespace asio = service::asio;
namespace beast = service::beast;

constexpr std::size_t kReadChunkBytes = 64 * 1024;
constexpr std::size_t kWriteChunkBytes = 256 * 1024;

// Writes a whole reply frame, re-arming the idle deadline for every piece.
awaitable<beast::error_code> write_all(service::Connection& connection, const Bytes& bytes,
                                       const service::Limits& limits) {
  beast::error_code ec;
  std::size_t written = 0;
  while (!ec && written < bytes.size()) {
    connection.expires_after(limits.idle_timeout);
    const std::size_t piece = std::min(kWriteChunkBytes, bytes.size() - written);
    written +=
        co_await asio::async_write(connection.stream(), asio::buffer(bytes.data() + written, piece),
                                   asio::redirect_error(use_awaitable, ec));
  }
  co_return ec;
}

struct Answer {
  protocol::Reply reply;
  bool keep_open = true;
};

Answer answer(const protocol::Frame& frame, bool greeted, service::Service& handler) {
  if (!greeted && frame.kind != static_cast<std::uint8_t>(protocol::Op::hello)) {
    return {
        protocol::ErrorReply{
            protocol::Status::bad_request, "the first request on a connection must be hello", {}},
        false};
  }
  protocol::Request request;
  if (auto error =
          protocol::decode_request(static_cast<protocol::Op>(frame.kind), frame.payload, request)) {
    return {service::decode_failure(error), false};
  }
  Answer result{handler.handle(service::kDefaultUser, request), true};
  // A refused Hello ends the conversation: nothing else can be understood.
  if (std::holds_alternative<protocol::Hello>(request) &&
      std::holds_alternative<protocol::ErrorReply>(result.reply)) {
    result.keep_open = false;
  }
  return result;
}

protocol::ErrorReply framing_failure(std::error_code error) {
  if (error == protocol::DecodeErrc::too_large) {
    return {protocol::Status::too_large, "the frame exceeds the size limit", {}};
  }
  return {protocol::Status::bad_request, "malformed frame", {}};
}

awaitable<void> serve_frames(service::Connection& connection, service::Service& handler,
                             const service::Limits& limits) {
  protocol::FrameParser parser(protocol::kMaxMessageBytes);
  std::vector<std::uint8_t> chunk(kReadChunkBytes);
  bool greeted = false;
  for (;;) {
    while (auto frame = parser.next()) {
      Answer result = answer(*frame, greeted, handler);
      frame.reset();
      greeted = greeted || std::holds_alternative<protocol::Empty>(result.reply);
      const Bytes encoded = protocol::encode_reply_frame(result.reply);
      result.reply = protocol::Empty{};
      if (co_await write_all(connection, encoded, limits))
        co_return;
      if (!result.keep_open || connection.stopping())
        co_return;
    }
    if (connection.stopping())
      co_return;

    beast::error_code ec;
    connection.set_idle(parser.buffered() == 0);
    connection.expires_after(limits.idle_timeout);
    const std::size_t received = co_await connection.stream().async_read_some(
        asio::buffer(chunk), asio::redirect_error(use_awaitable, ec));
    connection.set_idle(false);
    if (ec)
      co_return;
    if (auto error = parser.feed(ByteView(chunk.data(), received))) {
      co_await write_all(connection, protocol::encode_reply_frame(framing_failure(error)), limits);
      co_return;
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  service::Door door;
  door.program = "splitfs-tcp-server";
  door.description = "splitfs storage server, TCP door (even chunks)";
  door.data_subdir = "tcp";
  door.default_port = 65432;
  door.serve = serve_frames;
  return service::server_main(argc, argv, door);
}
