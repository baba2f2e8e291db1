// splitfs-https-server: the HTTPS door. HTTP/1.1 with keep-alive over TLS 1.3; the route table of
// protocol/codec.hpp maps each request onto the protocol, whose reply is the response body.
//
// Bounds: headers at most 8 KiB, bodies at most protocol::kMaxMessageBytes, 30 s without a byte
// moving closes the connection. A request that cannot be parsed gets a 400 (or 413 when too large)
// with an ErrorReply body and the connection is closed; a request that parses but does not decode
// gets its error status and the connection stays open.
#include <cstdint>
#include <string_view>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>

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

using Body = http::vector_body<std::uint8_t>;

http::response<Body> make_response(const protocol::Reply& reply, unsigned version,
                                   bool keep_alive) {
  unsigned status = 200;
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    status = protocol::http_status(error->status);
  }
  http::response<Body> response{static_cast<http::status>(status), version};
  response.set(http::field::content_type, kContentType);
  response.body() = protocol::encode_reply(reply);
  response.keep_alive(keep_alive);
  response.prepare_payload();
  return response;
}

// Writes a whole response, re-arming the idle deadline for every piece.
awaitable<beast::error_code> write_response(service::Connection& connection,
                                            http::response<Body>& response,
                                            const service::Limits& limits) {
  http::response_serializer<Body> serializer(response);
  beast::error_code ec;
  while (!ec && !serializer.is_done()) {
    connection.expires_after(limits.idle_timeout);
    co_await http::async_write_some(connection.stream(), serializer,
                                    asio::redirect_error(use_awaitable, ec));
  }
  co_return ec;
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
                           const service::Limits& limits) {
  auto& stream = connection.stream();
  beast::flat_buffer buffer;
  for (;;) {
    if (connection.stopping())
      co_return;
    http::request_parser<Body> parser;
    parser.header_limit(kHeaderLimit);
    parser.body_limit(protocol::kMaxMessageBytes);
    beast::error_code ec;

    while (!ec && !parser.is_header_done()) {
      connection.set_idle(buffer.size() == 0 && !parser.got_some());
      connection.expires_after(limits.idle_timeout);
      co_await http::async_read_some(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
      connection.set_idle(false);
    }
    if (!ec && !parser.is_done() &&
        beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> proceed{http::status::continue_, parser.get().version()};
      connection.expires_after(limits.idle_timeout);
      co_await http::async_write(stream, proceed, asio::redirect_error(use_awaitable, ec));
    }
    while (!ec && !parser.is_done()) {
      connection.expires_after(limits.idle_timeout);
      co_await http::async_read_some(stream, buffer, parser,
                                     asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      // Only a request we could not parse deserves an answer; a dropped or timed-out peer does not.
      if (is_parse_error(ec)) {
        auto response = make_response(parse_failure(ec), 11, false);
        co_await write_response(connection, response, limits);
      }
      co_return;
    }

    http::request<Body> request = parser.release();
    protocol::Request decoded;
    protocol::Reply reply;
    if (auto error = protocol::decode_http_request(request.method_string(), request.target(),
                                                   request.body(), decoded)) {
      reply = service::decode_failure(error);
    } else {
      reply = handler.handle(service::kDefaultUser, decoded);
    }
    // The request body may be large; free it before the reply is built.
    Body::value_type().swap(request.body());

    // No route answers HEAD, and its error reply carries a body the client will not read: close.
    const bool keep_alive =
        request.keep_alive() && request.method() != http::verb::head && !connection.stopping();
    auto response = make_response(reply, request.version(), keep_alive);
    reply = protocol::Empty{};
    if (co_await write_response(connection, response, limits))
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
