// The commit_batch op: several commits in one request, one status each in the reply, within the
// bounds of one commit's references for the whole batch.
#include <catch2/catch.hpp>

#include "common/wire.hpp"
#include "protocol/codec.hpp"

namespace splitfs::protocol {

namespace {

Id id_of(std::uint8_t seed) {
  Id id{};
  id.fill(seed);
  return id;
}

Commit commit_of(std::uint8_t seed, std::size_t refs) {
  Commit c{id_of(seed), seed, {}, Bytes(3, seed), Bytes(5, seed)};
  for (std::size_t i = 0; i < refs; ++i)
    c.refs.push_back({id_of(static_cast<std::uint8_t>(seed + i + 1)), 1});
  return c;
}

const CommitBatch kBatch{{commit_of(1, 2), commit_of(7, 0), commit_of(9, 1)}};

// A batch payload with `commits` commits, the first with a ref count of `refs` (the refs themselves
// left out, and padding in their place to make up a commit's least size: the decoder must stop at
// the count).
Bytes forged(std::uint32_t commits, std::uint32_t refs) {
  Bytes out;
  wire::Writer w(out);
  w.u32(commits);
  w.id(id_of(1));
  w.u64(1);
  w.u32(refs);
  w.u64(0);
  return out;
}

}  // namespace

TEST_CASE("a commit batch and its outcomes round-trip") {
  CHECK(op_of(kBatch) == Op::commit_batch);
  CHECK(static_cast<int>(Op::commit_batch) == 11);
  Request request;
  REQUIRE_FALSE(decode_request(Op::commit_batch, encode_request(kBatch), request));
  CHECK(std::get<CommitBatch>(request) == kBatch);
  // Each commit is laid out as a commit payload after the count.
  const Bytes payload = encode_request(kBatch);
  const Bytes first = encode_request(kBatch.commits[0]);
  CHECK(Bytes(payload.begin() + 4,
              payload.begin() + 4 + static_cast<std::ptrdiff_t>(first.size())) == first);

  const CommitOutcomes outcomes{{Status::ok, Status::conflict, Status::missing_shares}};
  const Bytes reply_payload = encode_reply(outcomes);
  CHECK(reply_payload == Bytes{0, 0, 0, 3, 0, 3, 4});
  Reply reply;
  REQUIRE_FALSE(decode_reply(Op::commit_batch, reply_payload, reply));
  CHECK(std::get<CommitOutcomes>(reply) == outcomes);
  CHECK(decode_reply(Op::commit_batch, Bytes{0, 0, 0, 1, 12}, reply) ==
        DecodeErrc::invalid_value);  // not a status
  CHECK(decode_reply(Op::commit_batch, Bytes{0, 0, 0, 2, 0}, reply) == DecodeErrc::truncated);
}

TEST_CASE("a commit batch is bounded in commits and in references") {
  Request request;
  CHECK(decode_request(Op::commit_batch, forged(kMaxBatchCommits + 1, 0), request) ==
        DecodeErrc::too_large);
  CHECK(decode_request(Op::commit_batch, forged(1, kMaxRefs + 1), request) ==
        DecodeErrc::too_large);
  // The second commit may use only the references the first left.
  CommitBatch two{{commit_of(1, 3)}};
  Bytes payload = encode_request(two);
  payload[3] = 2;  // two commits
  wire::Writer w(payload);
  w.id(id_of(2));
  w.u64(1);
  w.u32(static_cast<std::uint32_t>(kMaxRefs - 2));
  CHECK(decode_request(Op::commit_batch, payload, request) == DecodeErrc::too_large);
  CHECK(decode_request(Op::commit_batch, Bytes{0, 0, 0, 0}, request) == std::error_code{});
  CHECK(std::get<CommitBatch>(request).commits.empty());
}

TEST_CASE("a commit batch travels in frames and over HTTP") {
  const HttpRequest http = to_http(kBatch);
  CHECK(http.method == "POST");
  CHECK(http.target == "/v1/commits");
  Request request;
  REQUIRE_FALSE(decode_http_request("POST", "/v1/commits", http.body, request));
  CHECK(std::get<CommitBatch>(request) == kBatch);
  CHECK(decode_http_request("GET", "/v1/commits", http.body, request) == DecodeErrc::unknown_op);

  FrameParser parser;
  REQUIRE_FALSE(parser.feed(encode_request_frame(kBatch)));
  const auto got = parser.next();
  REQUIRE(got);
  CHECK(got->kind == 11);
  REQUIRE_FALSE(decode_request_frame(*got, request));
  CHECK(std::get<CommitBatch>(request) == kBatch);
}

}  // namespace splitfs::protocol
