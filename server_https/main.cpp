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
#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>
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
// What one read of a request body asks for at most.
constexpr std::size_t kBodyReadBytes = 64u << 10;
// The most a connection holds unparsed: a header, or a read of a body the parser has not taken
// (a chunk header that never ends, say).
constexpr std::size_t kMaxBufferedBytes = kHeaderLimit + kBodyReadBytes;
constexpr std::string_view kContentType = "application/octet-stream";

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

// A response as it goes out: its header's bytes (status line, fields, blank line), then its body.
struct Response {
  std::string header;
  Bytes body;
};

std::string header_bytes(const http::response_header<>& header) {
  std::ostringstream out;
  out << header;
  return std::move(out).str();
}

// `memory`, when given, is encoded into and becomes the body.
Response make_response(const protocol::Reply& reply, unsigned version, bool keep_alive,
                       Bytes memory = {}) {
  unsigned status = 200;
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    status = protocol::http_status(error->status);
  }
  protocol::encode_reply(reply, memory);
  http::response<http::empty_body> header{static_cast<http::status>(status), version};
  header.set(http::field::content_type, kContentType);
  header.content_length(memory.size());
  header.keep_alive(keep_alive);
  return {header_bytes(header.base()), std::move(memory)};
}

// Writes a whole response within the reply's transfer deadline. The next request's transfer starts
// with its first byte.
awaitable<beast::error_code> write_response(service::Connection& connection,
                                            const Response& response) {
  connection.start_transfer();
  return connection.write(as_bytes(response.header), response.body);
}

// Feeds the parser what the buffer holds, as far as it goes without more bytes; need_more is not
// an error.
void parse_buffered(beast::flat_buffer& buffer, http::request_parser<RequestBody>& parser,
                    beast::error_code& ec) {
  while (buffer.size() > 0 && !parser.is_done()) {
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more)
      ec = {};
    if (ec || used == 0)
      return;
  }
}

// Receives more of the request into `buffer`, at most `max` bytes, and counts them towards its
// transfer (which starts with its first byte). The peer closing is a partial message once any of
// the request came, else the end of the stream.
awaitable<void> receive(service::Connection& connection, beast::flat_buffer& buffer,
                        const http::request_parser<RequestBody>& parser, std::size_t max,
                        beast::error_code& ec) {
  const std::size_t room = std::min(max, buffer.max_size() - buffer.size());
  if (room == 0) {
    ec = http::error::buffer_overflow;
    co_return;
  }
  const std::size_t n = co_await connection.stream().async_read_some(
      buffer.prepare(room), asio::redirect_error(use_awaitable, ec));
  buffer.commit(n);
  if (n > 0 && !connection.in_transfer())
    connection.start_transfer();
  connection.moved(n);
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    ec = parser.got_some() || buffer.size() > 0 ? http::error::partial_message
                                                : http::error::end_of_stream;
  }
}

// Reads and parses a request header, at most kHeaderLimit bytes in all. Beast's own header limit
// bounds only the bytes not yet parsed, so the bytes parsed are counted here.
awaitable<void> read_header(service::Connection& connection, beast::flat_buffer& buffer,
                            http::request_parser<RequestBody>& parser, beast::error_code& ec) {
  std::size_t parsed = 0;
  for (;;) {
    const std::size_t before = buffer.size();
    parse_buffered(buffer, parser, ec);
    parsed += before - buffer.size();
    if (ec || parser.is_header_done())
      co_return;
    if (parsed + buffer.size() >= kHeaderLimit) {
      ec = http::error::header_limit;
      co_return;
    }
    connection.set_idle(buffer.size() == 0 && !parser.got_some());
    connection.arm();
    connection.expect(0);
    co_await receive(connection, buffer, parser, kHeaderLimit, ec);
    connection.set_idle(false);
    if (ec)
      co_return;
  }
}

// Reads and parses the rest of the request, within its transfer deadline.
awaitable<void> read_body(service::Connection& connection, beast::flat_buffer& buffer,
                          http::request_parser<RequestBody>& parser, beast::error_code& ec) {
  for (;;) {
    parse_buffered(buffer, parser, ec);
    if (ec || parser.is_done())
      co_return;
    connection.arm();
    const auto rest = parser.content_length_remaining();
    connection.expect(
        rest && *rest > buffer.size() ? static_cast<std::size_t>(*rest) - buffer.size() : 0);
    co_await receive(connection, buffer, parser, kBodyReadBytes, ec);
    if (ec)
      co_return;
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
  beast::flat_buffer buffer(kMaxBufferedBytes);
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
      const http::response<http::empty_body> proceed{http::status::continue_,
                                                     parser.get().version()};
      ec = co_await connection.write(as_bytes(header_bytes(proceed)));
    }
    if (!ec)
      co_await read_body(connection, buffer, parser, ec);
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
    if (response.body.capacity() <= protocol::FrameParser::kMaxSpareBytes) {
      spare.swap(response.body);
      spare.clear();
    }
    if (failed || !keep_alive)
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
