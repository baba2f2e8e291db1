// splitfs-tcp-server: the TCP door. The framed protocol of protocol/codec.hpp over TLS 1.3.
//
// The first request on a connection must be a Hello this server accepts, from an enrolled client
// within its connection cap; anything else gets an error reply and the connection closes, as does
// a first frame announcing more than a Hello could need or more than 1 KiB sent before the Hello
// is answered (so nothing large is buffered for a client not yet admitted). Every later request is
// authenticated again, so a client revoked meanwhile is refused and disconnected. Pipelined
// requests are answered one by one, in order. A frame that announces more than
// protocol::kMaxMessageBytes or does not decode gets an error reply, then the connection closes;
// 30 s without a byte moving, or a request or reply slower than the minimum transfer rate
// (server_main.hpp), closes it too.
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

// What one read asks for: a TLS record's plaintext, the most a read returns.
constexpr std::size_t kReadChunkBytes = 16u << 10;
// What may wait before the Hello is answered (a Hello frame is 9 bytes), and the largest length the
// first frame may announce.
constexpr std::size_t kMaxBytesBeforeHello = 1024;
constexpr std::uint32_t kMaxFirstFrameLength = 64;

// Writes a whole reply frame within the reply's transfer deadline.
awaitable<beast::error_code> write_all(service::Connection& connection, const Bytes& bytes) {
  connection.start_transfer();
  return connection.write(bytes);
}

struct Answer {
  protocol::Reply reply;
  bool keep_open = true;
};

Answer answer(const protocol::Frame& frame, bool greeted, service::Connection& connection,
              service::Service& handler) {
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
  Answer result{connection.handle(handler, request), true};
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
                             const service::Limits&) {
  protocol::FrameParser parser(protocol::kMaxMessageBytes);
  bool greeted = false;
  for (;;) {
    bool replied = false;
    while (auto frame = parser.next()) {
      Answer result = answer(*frame, greeted, connection, handler);
      greeted = greeted || std::holds_alternative<protocol::Empty>(result.reply);
      // One buffer per connection carries a request in and its reply out: a large request's
      // memory holds the next large reply, and the reply's the next request.
      Bytes encoded = std::move(frame->payload);
      frame.reset();
      protocol::encode_reply_frame(result.reply, encoded);
      result.reply = protocol::Empty{};
      const beast::error_code failed = co_await write_all(connection, encoded);
      parser.recycle(std::move(encoded));
      if (failed)
        co_return;
      if (!result.keep_open || connection.stopping())
        co_return;
      replied = true;
    }
    if (connection.stopping())
      co_return;
    if (!greeted && (parser.buffered() > kMaxBytesBeforeHello ||
                     parser.announced().value_or(0) > kMaxFirstFrameLength)) {
      const protocol::ErrorReply refusal{
          protocol::Status::bad_request, "the first request on a connection must be hello", {}};
      co_await write_all(connection, protocol::encode_reply_frame(refusal));
      co_return;
    }
    // The next request's clock starts with its first byte (already here when pipelined).
    if (parser.buffered() == 0)
      connection.end_transfer();
    else if (replied)
      connection.start_transfer();

    beast::error_code ec;
    connection.set_idle(parser.buffered() == 0);
    connection.arm();
    connection.expect(parser.missing());
    // Received in place: a large payload goes straight from TLS into its frame.
    const MutableByteView space = parser.prepare(kReadChunkBytes);
    const std::size_t received = co_await connection.stream().async_read_some(
        asio::buffer(space.data(), space.size()), asio::redirect_error(use_awaitable, ec));
    connection.set_idle(false);
    const std::error_code error = parser.commit(ec ? 0 : received);
    if (ec)
      co_return;
    if (!connection.in_transfer())
      connection.start_transfer();
    connection.moved(received);
    if (error) {
      co_await write_all(connection, protocol::encode_reply_frame(framing_failure(error)));
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
