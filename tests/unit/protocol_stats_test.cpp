// The stats op: its payloads, frames and HTTP route, added without changing any other encoding.
#include <catch2/catch.hpp>

#include "protocol/codec.hpp"

namespace splitfs::protocol {

namespace {

const UsageStats kStats{1, 2, 3, 4, 5, 6, 7, 8, 0x0102030405060708ull};

}  // namespace

TEST_CASE("the stats request and its reply round-trip") {
  CHECK(op_of(GetStats{}) == Op::stats);
  CHECK(static_cast<int>(Op::stats) == 10);
  CHECK(encode_request(GetStats{}).empty());
  Request request;
  REQUIRE_FALSE(decode_request(Op::stats, {}, request));
  CHECK(std::holds_alternative<GetStats>(request));
  CHECK(decode_request(Op::stats, Bytes{0}, request) == DecodeErrc::trailing_bytes);

  const Bytes payload = encode_reply(kStats);
  REQUIRE(payload.size() == std::size_t{9} * 8);
  // Big-endian u64 fields in declaration order.
  CHECK(payload[7] == 1);
  CHECK(payload[64] == 0x01);
  CHECK(payload[71] == 0x08);
  Reply reply;
  REQUIRE_FALSE(decode_reply(Op::stats, payload, reply));
  CHECK(std::get<UsageStats>(reply) == kStats);
  CHECK(decode_reply(Op::stats, ByteView(payload).first(71), reply) == DecodeErrc::truncated);
}

TEST_CASE("stats travels in frames and over HTTP") {
  const Bytes frame = encode_request_frame(GetStats{});
  CHECK(frame == Bytes{0, 0, 0, 1, 10});
  const HttpRequest http = to_http(GetStats{});
  CHECK(http.method == "GET");
  CHECK(http.target == "/v1/stats");
  CHECK(http.body.empty());
  Request request;
  REQUIRE_FALSE(decode_http_request("GET", "/v1/stats", {}, request));
  CHECK(std::holds_alternative<GetStats>(request));
  CHECK(decode_http_request("POST", "/v1/stats", {}, request) == DecodeErrc::unknown_op);

  Reply reply;
  REQUIRE_FALSE(decode_http_reply(Op::stats, 200, encode_reply(kStats), reply));
  CHECK(std::get<UsageStats>(reply) == kStats);
  FrameParser parser;
  REQUIRE_FALSE(parser.feed(encode_reply_frame(kStats)));
  const auto got = parser.next();
  REQUIRE(got);
  REQUIRE_FALSE(decode_reply_frame(Op::stats, *got, reply));
  CHECK(std::get<UsageStats>(reply) == kStats);
}

TEST_CASE("the existing ops keep their numbers") {
  CHECK(static_cast<int>(Op::hello) == 1);
  CHECK(static_cast<int>(Op::file_info) == 9);
  CHECK(encode_request_frame(ListFiles{}) == Bytes{0, 0, 0, 1, 7});
}

}  // namespace splitfs::protocol
