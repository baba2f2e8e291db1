// splitfs-https-server: the HTTPS door. HTTP/1.1 with keep-alive over TLS 1.3; the route table of
// protocol/codec.hpp maps each request onto the protocol, whose reply is the response body.
//
// Bounds: headers at most 8 KiB, bodies at most protocol::kMaxMessageBytes, 30 s without a byte
// moving closes the connection, and every request and reply must keep the minimum transfer rate
// (server_main.hpp). A request that cannot be parsed gets a 400 (or 413 when too large) with an
// ErrorReply body and the connection is closed; a request that parses but does not decode gets its
// error status and the connection stays open. A client that is not enrolled (or over its
// connection cap) is answered 403 (or 503) as soon as the request header is in, without reading
// the body, and the connection closes.
#include <cstdint>
#include <string_view>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>
#include <boost/optional.hpp>

#include "protocol/codec.hpp"
#include "service/server_main.hpp"

namespace {

using namespace splitfs;
using service::asio::awaitable;
using service::asio::use_awaitable;
namespace asio = service::asio;
namespace beast = service::beast;
namespace http = beast::http;

constexpr std::uint32_t kHeaderLimit = 8 * 1024;
constexpr std::string_view kContentType = "application/octet-stream";

using ResponseBody = http::vector_body<std::uint8_t>;

// A request body appended as it comes, into the room reserved for the announced length (the parser
// holds that length to the body limit first). vector_body zero-fills each piece's room before it
// copies the piece in: one more pass over every byte stored.
struct RequestBody {
  using value_type = Bytes;
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(http::header<isRequest, Fields>&, value_type& body) : body_(body) {}
    void init(const boost::optional<std::uint64_t>& length, beast::error_code& ec) {
      if (length)
        body_.reserve(static_cast<std::size_t>(*length));
      ec = {};
    }
    template <class ConstBufferSequence>
    std::size_t put(const ConstBufferSequence& buffers, beast::error_code& ec) {
      std::size_t n = 0;
      for (const auto piece : beast::buffers_range_ref(buffers)) {
        const auto* bytes = static_cast<const std::uint8_t*>(piece.data());
        body_.insert(body_.end(), bytes, bytes + piece.size());
        n += piece.size();
      }
      ec = {};
      return n;
    }
    void finish(beast::error_code& ec) { ec = {}; }

   private:
    value_type& body_;
  };
};

// `memory`, when given, is encoded into and becomes the body.
http::response<ResponseBody> make_response(const protocol::Reply& reply, unsigned version,
                                           bool keep_alive, Bytes memory = {}) {
  unsigned status = 200;
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    status = protocol::http_status(error->status);
  }
  http::response<ResponseBody> response{static_cast<http::status>(status), version};
  response.set(http::field::content_type, kContentType);
  protocol::encode_reply(reply, memory);
  response.body() = std::move(memory);
  response.keep_alive(keep_alive);
  response.prepare_payload();
  return response;
}

// Writes a whole response within the reply's transfer deadline, re-armed for every piece.
awaitable<beast::error_code> write_response(service::Connection& connection,
                                            http::response<ResponseBody>& response) {
  http::response_serializer<ResponseBody> serializer(response);
  beast::error_code ec;
  connection.start_transfer();
  while (!ec && !serializer.is_done()) {
    connection.arm();
    connection.moved(co_await http::async_write_some(connection.stream(), serializer,
                                                     asio::redirect_error(use_awaitable, ec)));
  }
  connection.end_transfer();
  co_return ec;
}

// Reads more of the request body into the parser within the request's transfer deadline.
awaitable<void> read_some(service::Connection& connection, beast::flat_buffer& buffer,
                          http::request_parser<RequestBody>& parser, beast::error_code& ec) {
  connection.arm();
  const auto rest = parser.content_length_remaining();
  connection.expect(rest && *rest > buffer.size() ? static_cast<std::size_t>(*rest) - buffer.size()
                                                  : 0);
  const std::size_t n = co_await http::async_read_some(connection.stream(), buffer, parser,
                                                       asio::redirect_error(use_awaitable, ec));
  connection.moved(n);
}

// Reads and parses a request header, at most kHeaderLimit bytes in all. Beast's own header limit
// bounds only the bytes not yet parsed, and its read loop goes on while fields keep coming, so the
// header is fed to the parser here. The transfer deadline starts with the request's first byte.
awaitable<void> read_header(service::Connection& connection, beast::flat_buffer& buffer,
                            http::request_parser<RequestBody>& parser, beast::error_code& ec) {
  std::size_t parsed = 0;
  for (;;) {
    if (buffer.size() > 0) {
      const std::size_t used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      parsed += used;
      if (ec && ec != http::error::need_more)
        co_return;
      ec = {};
      if (parser.is_header_done())
        co_return;
      if (parsed + buffer.size() >= kHeaderLimit) {
        ec = http::error::header_limit;
        co_return;
      }
    }
    connection.set_idle(buffer.size() == 0 && !parser.got_some());
    connection.arm();
    connection.expect(0);
    const std::size_t n = co_await connection.stream().async_read_some(
        buffer.prepare(kHeaderLimit), asio::redirect_error(use_awaitable, ec));
    connection.set_idle(false);
    buffer.commit(n);
    if (n > 0 && !connection.in_transfer())
      connection.start_transfer();
    connection.moved(n);
    if (ec) {
      const bool closed = ec == asio::error::eof || ec == asio::ssl::error::stream_truncated;
      if (closed)
        ec = parser.got_some() || buffer.size() > 0 ? http::error::partial_message
                                                    : http::error::end_of_stream;
      co_return;
    }
  }
}

bool is_parse_error(const beast::error_code& ec) {
  static const auto& category = beast::error_code(http::error::bad_method).category();
  return ec.category() == category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

// The reply to a request Beast could not parse; the connection closes after it.
protocol::ErrorReply parse_failure(const beast::error_code& ec) {
  if (ec == http::error::header_limit) {
    return {protocol::Status::too_large, "the request header exceeds 8 KiB", {}};
  }
  if (ec == http::error::body_limit || ec == http::error::buffer_overflow) {
    return {protocol::Status::too_large, "the request body exceeds the size limit", {}};
  }
  return {protocol::Status::bad_request, "malformed HTTP request", {}};
}

awaitable<void> serve_http(service::Connection& connection, service::Service& handler,
                           const service::Limits&) {
  auto& stream = connection.stream();
  beast::flat_buffer buffer;
  // The last reply's memory, which the next request body is received into (see
  // FrameParser::recycle for why and how much is kept).
  Bytes spare;
  for (;;) {
    if (connection.stopping())
      co_return;
    http::request_parser<RequestBody> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(protocol::kMaxMessageBytes);
    parser.get().body().swap(spare);
    beast::error_code ec;

    connection.end_transfer();
    co_await read_header(connection, buffer, parser, ec);
    if (!ec) {
      // Nobody unknown gets to send a body.
      if (auto refusal = connection.admit()) {
        auto response = make_response(*refusal, parser.get().version(), false);
        co_await write_response(connection, response);
        co_return;
      }
    }
    if (!ec && !parser.is_done() &&
        beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> proceed{http::status::continue_, parser.get().version()};
      connection.arm();
      co_await http::async_write(stream, proceed, asio::redirect_error(use_awaitable, ec));
    }
    while (!ec && !parser.is_done()) {
      co_await read_some(connection, buffer, parser, ec);
    }
    if (ec) {
      // Only a request we could not parse deserves an answer; a dropped or timed-out peer does not.
      if (is_parse_error(ec)) {
        auto response = make_response(parse_failure(ec), 11, false);
        co_await write_response(connection, response);
      }
      co_return;
    }

    http::request<RequestBody> request = parser.release();
    protocol::Request decoded;
    protocol::Reply reply;
    if (auto error = protocol::decode_http_request(request.method_string(), request.target(),
                                                   request.body(), decoded)) {
      reply = service::decode_failure(error);
    } else {
      reply = connection.handle(handler, decoded);
    }
    // No route answers HEAD, and its error reply carries a body the client will not read: close.
    const bool keep_alive =
        request.keep_alive() && request.method() != http::verb::head && !connection.stopping();
    // One buffer per connection carries a request body in and its reply out, as in the TCP door,
    // and is kept for the next request within the parser's bound.
    auto response = make_response(reply, request.version(), keep_alive, std::move(request.body()));
    reply = protocol::Empty{};
    const beast::error_code failed = co_await write_response(connection, response);
    if (response.body().capacity() <= protocol::FrameParser::kMaxSpareBytes) {
      spare.swap(response.body());
      spare.clear();
    }
    if (failed)
      co_return;
    if (!keep_alive)
      co_return;
  }
}

}  // namespace

int main(int argc, char** argv) {
  service::Door door;
  door.program = "splitfs-https-server";
  door.description = "splitfs storage server, HTTPS door (odd chunks)";
  door.data_subdir = "https";
  door.default_port = 5000;
  door.serve = serve_http;
  return service::server_main(argc, argv, door);
}
