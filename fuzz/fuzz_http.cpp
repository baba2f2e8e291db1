// libFuzzer target: the HTTPS door's request mapping (decode_http_request) and the client's reply
// mapping (decode_http_reply). Input layout: u8 method selector | target up to the first '\n' |
// body. What decodes must map back (to_http) to the same method and target and decode again to
// the same request.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/codec.hpp"

namespace {

using namespace splitfs;
using namespace splitfs::protocol;

constexpr std::array<std::string_view, 8> kMethods = {"GET",  "POST",    "PUT", "DELETE",
                                                      "HEAD", "OPTIONS", "get", "BREW"};
constexpr std::array<unsigned, 9> kStatuses = {200, 400, 403, 404, 409, 413, 500, 503, 507};

void check(bool holds) {
  if (!holds)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  const std::string_view method = kMethods[data[0] % kMethods.size()];
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const std::size_t newline = rest.find('\n');
  const std::string_view target = rest.substr(0, newline);
  const std::string_view body_text =
      newline == std::string_view::npos ? std::string_view() : rest.substr(newline + 1);
  const ByteView body = as_bytes(body_text);

  Request request;
  if (!decode_http_request(method, target, body, request)) {
    const HttpRequest http = to_http(request);
    check(http.method == method);
    Request again;
    check(!decode_http_request(http.method, http.target, http.body, again));
    check(again == request);
  }
  for (std::uint8_t op = 1; op <= 16; ++op) {
    Reply reply;
    const unsigned status = kStatuses[(data[0] >> 4) % kStatuses.size()];
    if (!decode_http_reply(static_cast<Op>(op), status, body, reply))
      check(status == 200 || std::holds_alternative<ErrorReply>(reply));
  }
  return 0;
}
