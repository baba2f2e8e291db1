// HTTP mapping: the route table in both directions, and the targets a peer can send instead.
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "protocol/codec.hpp"

namespace splitfs::protocol {
namespace {

Id make_id(std::uint8_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>(seed + i * 13);
  return id;
}

std::error_code decode(std::string_view method, std::string_view target, const Bytes& body = {}) {
  Request out;
  return decode_http_request(method, target, body, out);
}

struct Route {
  Request request;
  std::string method;
  std::string target;
  bool has_body;
};

std::vector<Route> routes() {
  const Id file = make_id(0xA0);
  const std::string hex = to_hex(file);
  Commit commit{file, 7, {{make_id(1), 2}}, {1, 2}, {3, 4, 5}};
  return {
      {Hello{}, "GET", "/v1/hello", true},
      {HasShares{{make_id(1), make_id(2)}}, "POST", "/v1/shares/has", true},
      {PutShares{{{make_id(3), {9, 9}}}}, "POST", "/v1/shares", true},
      {GetShares{{make_id(4)}}, "POST", "/v1/shares/get", true},
      {commit, "PUT", "/v1/files/" + hex, true},
      {GetFile{file}, "GET", "/v1/files/" + hex, false},
      {ListFiles{}, "GET", "/v1/files", false},
      {RemoveFile{file}, "DELETE", "/v1/files/" + hex, false},
      {GetFileInfo{file}, "GET", "/v1/files/" + hex + "/info", false},
  };
}

}  // namespace

TEST_CASE("every request maps to its route and back") {
  for (const Route& route : routes()) {
    CAPTURE(route.target);
    const HttpRequest http = to_http(route.request);
    CHECK(http.method == route.method);
    CHECK(http.target == route.target);
    if (route.has_body) {
      CHECK(http.body == encode_request(route.request));
    } else {
      CHECK(http.body.empty());
    }
    Request decoded;
    REQUIRE_FALSE(decode_http_request(http.method, http.target, http.body, decoded));
    CHECK(decoded == route.request);
  }
}

TEST_CASE("ids in targets are lowercase on the way out and either case on the way in") {
  const Id file = make_id(0xF0);
  const std::string target = to_http(GetFile{file}).target;
  CHECK(target == "/v1/files/" + to_hex(file));
  std::string upper = target;
  for (std::size_t i = std::string("/v1/files/").size(); i < upper.size(); ++i) {
    if (upper[i] >= 'a' && upper[i] <= 'f')
      upper[i] = static_cast<char>(upper[i] - 'a' + 'A');
  }
  REQUIRE(upper != target);
  Request decoded;
  REQUIRE_FALSE(decode_http_request("GET", upper, {}, decoded));
  CHECK(decoded == Request{GetFile{file}});
}

TEST_CASE("a method outside the table is an unknown op") {
  for (const Route& route : routes()) {
    const HttpRequest http = to_http(route.request);
    for (std::string_view method : {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "get"}) {
      if (method == route.method)
        continue;
      // GET, PUT and DELETE share /v1/files/<hex>; those are distinct routes, not wrong methods.
      if (route.target.starts_with("/v1/files/") && !route.target.ends_with("/info") &&
          (method == "GET" || method == "PUT" || method == "DELETE")) {
        continue;
      }
      CAPTURE(route.target, method);
      CHECK(decode(method, http.target, http.body) == DecodeErrc::unknown_op);
    }
  }
  const std::string file_target = "/v1/files/" + to_hex(make_id(1));
  CHECK(decode("POST", file_target) == DecodeErrc::unknown_op);
  CHECK(decode("HEAD", file_target) == DecodeErrc::unknown_op);
}

TEST_CASE("an unknown path is an unknown op") {
  const std::string hex = to_hex(make_id(2));
  for (const std::string& target :
       {std::string(""), std::string("/"), std::string("/v1"), std::string("/v1/"),
        std::string("/v2/hello"), std::string("/v1/hello/"), std::string("/v1/Hello"),
        std::string("v1/hello"), std::string("/v1/shares/"), std::string("/v1/shares/put"),
        std::string("/v1/files?limit=1"), std::string("/v1/files/" + hex + "/"),
        std::string("/v1/files/" + hex + "/infos"), std::string("/v1/files/" + hex + "/info/x"),
        std::string("//v1/files"), std::string("/v1/hello?x")}) {
    CAPTURE(target);
    CHECK(decode("GET", target) == DecodeErrc::unknown_op);
  }
}

TEST_CASE("a malformed id in a target is an invalid value") {
  const std::string hex = to_hex(make_id(3));
  std::string bad_digit = hex;
  bad_digit[10] = 'g';
  for (const std::string& id : {hex.substr(1), hex + "0", bad_digit, std::string(),
                                hex.substr(0, 62) + " 0", hex + "?x=1"}) {
    CAPTURE(id);
    CHECK(decode("GET", "/v1/files/" + id) == DecodeErrc::invalid_value);
    CHECK(decode("DELETE", "/v1/files/" + id) == DecodeErrc::invalid_value);
    CHECK(decode("GET", "/v1/files/" + id + "/info") == DecodeErrc::invalid_value);
  }
}

TEST_CASE("a commit's body id must equal the target id") {
  Commit commit{make_id(4), 1, {}, {}, {}};
  const HttpRequest http = to_http(commit);
  CHECK(decode("PUT", "/v1/files/" + to_hex(make_id(5)), http.body) == DecodeErrc::invalid_value);
  CHECK_FALSE(decode("PUT", http.target, http.body));
  CHECK(decode("PUT", http.target, {}) == DecodeErrc::truncated);
}

TEST_CASE("bodies are decoded with the payload rules") {
  const std::string file_target = "/v1/files/" + to_hex(make_id(6));
  CHECK(decode("GET", file_target, {0}) == DecodeErrc::trailing_bytes);
  CHECK(decode("DELETE", file_target, {0}) == DecodeErrc::trailing_bytes);
  CHECK(decode("GET", file_target + "/info", {0}) == DecodeErrc::trailing_bytes);
  CHECK(decode("GET", "/v1/files", {0}) == DecodeErrc::trailing_bytes);
  CHECK(decode("GET", "/v1/hello", {}) == DecodeErrc::truncated);
  CHECK(decode("POST", "/v1/shares/has", {0xFF, 0xFF, 0xFF, 0xFF}) == DecodeErrc::too_large);
  Request out = ListFiles{};
  REQUIRE_FALSE(decode_http_request("GET", "/v1/hello", Bytes{0, 0, 0, 9}, out));
  CHECK(out == Request{Hello{9}});
}

TEST_CASE("statuses map to HTTP statuses") {
  CHECK(http_status(Status::ok) == 200);
  CHECK(http_status(Status::bad_request) == 400);
  CHECK(http_status(Status::not_found) == 404);
  CHECK(http_status(Status::conflict) == 409);
  CHECK(http_status(Status::missing_shares) == 422);
  CHECK(http_status(Status::too_large) == 413);
  CHECK(http_status(Status::corrupt) == 500);
  CHECK(http_status(Status::unsupported) == 501);
  CHECK(http_status(Status::internal) == 500);
  CHECK(http_status(static_cast<Status>(77)) == 500);
}

TEST_CASE("HTTP replies decode by status") {
  Reply out;
  const FileInfo info{3, 4, 5, 6};
  REQUIRE_FALSE(decode_http_reply(Op::file_info, 200, encode_reply(info), out));
  CHECK(out == Reply{info});

  const ErrorReply missing{Status::missing_shares, "need these", {make_id(7)}};
  REQUIRE_FALSE(decode_http_reply(Op::commit, 422, encode_reply(missing), out));
  CHECK(out == Reply{missing});

  const ErrorReply corrupt{Status::corrupt, "damaged", {}};
  REQUIRE_FALSE(decode_http_reply(Op::get_shares, 500, encode_reply(corrupt), out));
  CHECK(out == Reply{corrupt});

  CHECK(decode_http_reply(Op::commit, 404, encode_reply(missing), out) ==
        DecodeErrc::invalid_value);
  // What a proxy might answer instead of the server.
  CHECK(decode_http_reply(Op::commit, 502, as_bytes("<html>bad gateway</html>"), out));
}

}  // namespace splitfs::protocol
