// Payload and frame codec: exact wire layout, round trips, and every way a peer can lie.
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "protocol/codec.hpp"

// Records the largest single allocation, so tests can prove a lying length allocates nothing big.
namespace {
std::atomic<std::size_t> g_largest_allocation{0};
}  // namespace

// Every non-aligned form is replaced, so no block crosses between this allocator and the default.
void* operator new(std::size_t size) {
  std::size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
  while (size > seen && !g_largest_allocation.compare_exchange_weak(seen, size)) {
  }
  if (void* p = std::malloc(size == 0 ? 1 : size))
    return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
  return ::operator new(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept {
  return ::operator new(size, tag);
}
// Not inlined: GCC would otherwise see free() applied to the result of new and warn.
[[gnu::noinline]] void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  ::operator delete(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  ::operator delete(p);
}
void operator delete[](void* p) noexcept {
  ::operator delete(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  ::operator delete(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  ::operator delete(p);
}

namespace splitfs::protocol {
namespace {

Id make_id(std::uint8_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>((std::size_t{seed} * 31) + i);
  return id;
}

Bytes make_bytes(std::size_t n, std::uint8_t seed) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i)
    out[i] = static_cast<std::uint8_t>(seed + i * 7);
  return out;
}

void append_u32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(v >> shift));
}
void append_u64(Bytes& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(v >> shift));
}
void append_id(Bytes& out, const Id& id) {
  out.insert(out.end(), id.begin(), id.end());
}

std::vector<Request> sample_requests() {
  Commit commit;
  commit.file = make_id(9);
  commit.version = 0x0102030405060708ull;
  commit.refs = {{make_id(1), 3}, {make_id(2), 0xFFFFFFFFu}};
  commit.entry = make_bytes(17, 1);
  commit.manifest = make_bytes(40, 2);
  return {
      Hello{},
      Hello{0xDEADBEEF},
      HasShares{},
      HasShares{{make_id(1), make_id(2), make_id(3)}},
      PutShares{},
      PutShares{
          {{make_id(4), make_bytes(10, 3)}, {make_id(5), {}}, {make_id(6), make_bytes(1, 9)}}},
      GetShares{},
      GetShares{{make_id(7)}},
      Commit{},
      commit,
      GetFile{make_id(10)},
      ListFiles{},
      RemoveFile{make_id(11)},
      GetFileInfo{make_id(12)},
  };
}

// (op of the request it answers, reply)
std::vector<std::pair<Op, Reply>> sample_replies() {
  return {
      {Op::hello, Empty{}},
      {Op::put_shares, Empty{}},
      {Op::commit, Empty{}},
      {Op::remove_file, Empty{}},
      {Op::has_shares, Presence{}},
      {Op::has_shares, Presence{{true, false, false, true, true}}},
      {Op::get_shares, Shares{}},
      {Op::get_shares, Shares{{make_bytes(5, 1), {}, make_bytes(33, 2)}}},
      {Op::get_file, FileRecord{}},
      {Op::get_file, FileRecord{~0ull, make_bytes(8, 3), make_bytes(50, 4)}},
      {Op::list_files, FileList{}},
      {Op::list_files,
       FileList{{{make_id(1), 1, make_bytes(3, 5)}, {make_id(2), 2, {}}, {make_id(3), 3, {1}}}}},
      {Op::file_info, FileInfo{}},
      {Op::file_info, FileInfo{1, 2, 3, 0xFFFFFFFFFFull}},
  };
}

std::vector<ErrorReply> sample_errors() {
  return {
      {Status::bad_request, "", {}},
      {Status::not_found, "no such file", {}},
      {Status::missing_shares, "missing", {make_id(1), make_id(2)}},
      {Status::internal, std::string(kMaxErrorText, 'x'), {}},
  };
}

std::error_code decode_request_bytes(Op op, const Bytes& payload) {
  Request out;
  return decode_request(op, payload, out);
}

std::error_code decode_reply_bytes(Op op, const Bytes& payload) {
  Reply out;
  return decode_reply(op, payload, out);
}

std::error_code decode_error_bytes(const Bytes& payload) {
  ErrorReply out;
  return decode_error(payload, out);
}

// Runs `decode` with the allocation probe armed; returns the largest allocation it made.
template <class F>
std::size_t largest_allocation_during(F decode) {
  g_largest_allocation = 0;
  decode();
  return g_largest_allocation.load();
}

constexpr std::size_t kSmallAllocation = 64u << 10;

}  // namespace

TEST_CASE("op_of names every request's op") {
  CHECK(op_of(Hello{}) == Op::hello);
  CHECK(op_of(HasShares{}) == Op::has_shares);
  CHECK(op_of(PutShares{}) == Op::put_shares);
  CHECK(op_of(GetShares{}) == Op::get_shares);
  CHECK(op_of(Commit{}) == Op::commit);
  CHECK(op_of(GetFile{}) == Op::get_file);
  CHECK(op_of(ListFiles{}) == Op::list_files);
  CHECK(op_of(RemoveFile{}) == Op::remove_file);
  CHECK(op_of(GetFileInfo{}) == Op::file_info);
}

TEST_CASE("every request round-trips") {
  for (const Request& request : sample_requests()) {
    CAPTURE(request.index());
    const Bytes payload = encode_request(request);
    Request decoded = ListFiles{};
    REQUIRE_FALSE(decode_request(op_of(request), payload, decoded));
    CHECK(decoded == request);
  }
}

TEST_CASE("every reply round-trips") {
  for (const auto& [op, reply] : sample_replies()) {
    CAPTURE(op, reply.index());
    const Bytes payload = encode_reply(reply);
    Reply decoded = ErrorReply{};
    REQUIRE_FALSE(decode_reply(op, payload, decoded));
    CHECK(decoded == reply);
  }
  for (const ErrorReply& error : sample_errors()) {
    CAPTURE(error.message.size());
    const Bytes payload = encode_reply(error);
    ErrorReply decoded;
    REQUIRE_FALSE(decode_error(payload, decoded));
    CHECK(decoded == error);
  }
}

TEST_CASE("wire layout is big-endian with u32 prefixes and raw ids") {
  CHECK(encode_request(Hello{0x01020304}) == Bytes{1, 2, 3, 4});
  CHECK(encode_request(ListFiles{}).empty());
  CHECK(encode_reply(Empty{}).empty());

  Commit commit{
      make_id(1), 0x1122334455667788ull, {{make_id(2), 0x0A0B0C0D}}, {0xE1}, {0xF1, 0xF2}};
  Bytes expected;
  append_id(expected, make_id(1));
  append_u64(expected, 0x1122334455667788ull);
  append_u32(expected, 1);
  append_id(expected, make_id(2));
  append_u32(expected, 0x0A0B0C0D);
  append_u32(expected, 1);
  expected.push_back(0xE1);
  append_u32(expected, 2);
  expected.insert(expected.end(), {0xF1, 0xF2});
  CHECK(encode_request(commit) == expected);

  PutShares put{{{make_id(3), {7, 8, 9}}}};
  expected.clear();
  append_u32(expected, 1);
  append_id(expected, make_id(3));
  append_u32(expected, 3);
  expected.insert(expected.end(), {7, 8, 9});
  CHECK(encode_request(put) == expected);

  CHECK(encode_reply(Presence{{true, false}}) == Bytes{0, 0, 0, 2, 1, 0});

  ErrorReply error{Status::missing_shares, "ab", {make_id(4)}};
  expected = {4};
  append_u32(expected, 2);
  expected.insert(expected.end(), {'a', 'b'});
  append_u32(expected, 1);
  append_id(expected, make_id(4));
  CHECK(encode_reply(error) == expected);

  FileInfo info{1, 2, 3, 4};
  expected.clear();
  for (std::uint64_t v : {1, 2, 3, 4})
    append_u64(expected, v);
  CHECK(encode_reply(info) == expected);
}

TEST_CASE("every strict prefix of a valid payload is truncated") {
  for (const Request& request : sample_requests()) {
    const Bytes payload = encode_request(request);
    for (std::size_t n = 0; n < payload.size(); ++n) {
      CAPTURE(request.index(), n);
      const Bytes prefix(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK(decode_request_bytes(op_of(request), prefix) == DecodeErrc::truncated);
    }
  }
  for (const auto& [op, reply] : sample_replies()) {
    const Bytes payload = encode_reply(reply);
    for (std::size_t n = 0; n < payload.size(); ++n) {
      CAPTURE(op, reply.index(), n);
      const Bytes prefix(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK(decode_reply_bytes(op, prefix) == DecodeErrc::truncated);
    }
  }
  for (const ErrorReply& error : sample_errors()) {
    const Bytes payload = encode_reply(error);
    for (std::size_t n = 0; n < payload.size(); ++n) {
      CAPTURE(n);
      const Bytes prefix(payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(n));
      CHECK(decode_error_bytes(prefix) == DecodeErrc::truncated);
    }
  }
}

TEST_CASE("trailing bytes are rejected") {
  for (const Request& request : sample_requests()) {
    CAPTURE(request.index());
    Bytes payload = encode_request(request);
    payload.push_back(0);
    CHECK(decode_request_bytes(op_of(request), payload) == DecodeErrc::trailing_bytes);
  }
  for (const auto& [op, reply] : sample_replies()) {
    CAPTURE(op, reply.index());
    Bytes payload = encode_reply(reply);
    payload.push_back(0);
    CHECK(decode_reply_bytes(op, payload) == DecodeErrc::trailing_bytes);
  }
  Bytes error = encode_reply(ErrorReply{Status::conflict, "x", {}});
  error.push_back(0);
  CHECK(decode_error_bytes(error) == DecodeErrc::trailing_bytes);
}

TEST_CASE("a failed decode leaves the output untouched") {
  Request request = GetFile{make_id(1)};
  Bytes payload = encode_request(Hello{});
  payload.pop_back();
  CHECK(decode_request(Op::hello, payload, request) == DecodeErrc::truncated);
  CHECK(request == Request{GetFile{make_id(1)}});
}

TEST_CASE("unknown ops and statuses are rejected") {
  for (int op : {0, 12, 200, 255}) {
    CAPTURE(op);
    CHECK(decode_request_bytes(static_cast<Op>(op), {}) == DecodeErrc::unknown_op);
    CHECK(decode_reply_bytes(static_cast<Op>(op), {}) == DecodeErrc::unknown_op);
  }
  Bytes error = encode_reply(ErrorReply{Status::not_found, "gone", {}});
  for (int status : {12, 100, 255}) {
    CAPTURE(status);
    error[0] = static_cast<std::uint8_t>(status);
    CHECK(decode_error_bytes(error) == DecodeErrc::unknown_status);
  }
  error[0] = 0;  // ok never carries an ErrorReply
  CHECK(decode_error_bytes(error) == DecodeErrc::invalid_value);
}

TEST_CASE("a bool other than 0 or 1 is invalid") {
  for (std::uint8_t bad : {2, 0x80, 0xFF}) {
    CAPTURE(bad);
    Bytes payload = encode_reply(Presence{{true, false, true}});
    payload[5] = bad;
    CHECK(decode_reply_bytes(Op::has_shares, payload) == DecodeErrc::invalid_value);
  }
}

TEST_CASE("the reply for an op has that op's layout") {
  // A FileInfo payload read as a Presence fails rather than being reinterpreted silently.
  CHECK(decode_reply_bytes(Op::hello, encode_reply(FileInfo{})) == DecodeErrc::trailing_bytes);
  Reply out;
  REQUIRE_FALSE(decode_reply(Op::put_shares, {}, out));
  CHECK(std::holds_alternative<Empty>(out));
}

TEST_CASE("batch bounds are enforced at their exact limits") {
  SECTION("id lists") {
    HasShares at_limit;
    at_limit.ids.assign(kMaxBatchItems, make_id(1));
    CHECK_FALSE(decode_request_bytes(Op::has_shares, encode_request(at_limit)));
    HasShares over = at_limit;
    over.ids.push_back(make_id(2));
    CHECK(decode_request_bytes(Op::has_shares, encode_request(over)) == DecodeErrc::too_large);
    GetShares get_over{over.ids};
    CHECK(decode_request_bytes(Op::get_shares, encode_request(get_over)) == DecodeErrc::too_large);
  }
  SECTION("one share") {
    PutShares at_limit{{{make_id(1), Bytes(kMaxShareBytes, 0xAB)}}};
    Request decoded;
    REQUIRE_FALSE(decode_request(Op::put_shares, encode_request(at_limit), decoded));
    CHECK(decoded == Request{at_limit});
    PutShares over{{{make_id(1), Bytes(kMaxShareBytes + 1, 0xAB)}}};
    CHECK(decode_request_bytes(Op::put_shares, encode_request(over)) == DecodeErrc::too_large);
    Shares blobs_over{{Bytes(kMaxShareBytes + 1)}};
    CHECK(decode_reply_bytes(Op::get_shares, encode_reply(blobs_over)) == DecodeErrc::too_large);
  }
  SECTION("a whole batch") {
    const std::size_t per_share = kMaxBatchBytes / 8;
    PutShares at_limit;
    Shares blobs;
    for (std::uint8_t i = 0; i < 8; ++i) {
      at_limit.shares.push_back({make_id(i), make_bytes(per_share, i)});
      blobs.blobs.push_back(make_bytes(per_share, i));
    }
    Request decoded;
    REQUIRE_FALSE(decode_request(Op::put_shares, encode_request(at_limit), decoded));
    CHECK(decoded == Request{at_limit});
    Reply decoded_reply;
    REQUIRE_FALSE(decode_reply(Op::get_shares, encode_reply(blobs), decoded_reply));
    CHECK(decoded_reply == Reply{blobs});

    at_limit.shares.push_back({make_id(9), {1}});
    CHECK(decode_request_bytes(Op::put_shares, encode_request(at_limit)) == DecodeErrc::too_large);
    blobs.blobs.push_back({1});
    CHECK(decode_reply_bytes(Op::get_shares, encode_reply(blobs)) == DecodeErrc::too_large);
  }
  SECTION("presence and share counts") {
    Presence over;
    over.present.assign(kMaxBatchItems + 1, true);
    CHECK(decode_reply_bytes(Op::has_shares, encode_reply(over)) == DecodeErrc::too_large);
    Shares many;
    many.blobs.resize(kMaxBatchItems + 1);
    CHECK(decode_reply_bytes(Op::get_shares, encode_reply(many)) == DecodeErrc::too_large);
    PutShares many_puts;
    many_puts.shares.resize(kMaxBatchItems + 1);
    CHECK(decode_request_bytes(Op::put_shares, encode_request(many_puts)) == DecodeErrc::too_large);
  }
}

TEST_CASE("file bounds are enforced at their exact limits") {
  SECTION("entry") {
    Commit commit{make_id(1), 1, {}, Bytes(kMaxEntryBytes, 1), {}};
    CHECK_FALSE(decode_request_bytes(Op::commit, encode_request(commit)));
    commit.entry.push_back(1);
    CHECK(decode_request_bytes(Op::commit, encode_request(commit)) == DecodeErrc::too_large);
    FileRecord record{1, Bytes(kMaxEntryBytes + 1), {}};
    CHECK(decode_reply_bytes(Op::get_file, encode_reply(record)) == DecodeErrc::too_large);
    FileList list{{{make_id(1), 1, Bytes(kMaxEntryBytes + 1)}}};
    CHECK(decode_reply_bytes(Op::list_files, encode_reply(list)) == DecodeErrc::too_large);
  }
  SECTION("manifest length is checked against the bound before the data") {
    // The manifest's length is the last field of an empty-manifest commit: rewrite it in place.
    Bytes payload = encode_request(Commit{make_id(1), 1, {}, {}, {}});
    auto set_manifest_length = [&payload](std::uint32_t n) {
      payload.resize(payload.size() - 4);
      append_u32(payload, n);
    };
    set_manifest_length(static_cast<std::uint32_t>(kMaxManifestBytes));
    CHECK(decode_request_bytes(Op::commit, payload) == DecodeErrc::truncated);
    set_manifest_length(static_cast<std::uint32_t>(kMaxManifestBytes + 1));
    CHECK(decode_request_bytes(Op::commit, payload) == DecodeErrc::too_large);

    Bytes record = encode_reply(FileRecord{});
    record.resize(record.size() - 4);
    append_u32(record, static_cast<std::uint32_t>(kMaxManifestBytes + 1));
    CHECK(decode_reply_bytes(Op::get_file, record) == DecodeErrc::too_large);
  }
  SECTION("ref and listing counts") {
    Bytes commit;
    append_id(commit, make_id(1));
    append_u64(commit, 1);
    append_u32(commit, static_cast<std::uint32_t>(kMaxRefs + 1));
    CHECK(decode_request_bytes(Op::commit, commit) == DecodeErrc::too_large);
    Bytes list;
    append_u32(list, static_cast<std::uint32_t>(kMaxListItems + 1));
    CHECK(decode_reply_bytes(Op::list_files, list) == DecodeErrc::too_large);
  }
}

TEST_CASE("error replies are bounded and always encode decodable") {
  Bytes payload = encode_reply(ErrorReply{Status::bad_request, "", {}});
  // Rewrite the message length (bytes 1..4) to one past the bound.
  payload.resize(1);
  append_u32(payload, static_cast<std::uint32_t>(kMaxErrorText + 1));
  payload.resize(payload.size() + kMaxErrorText + 1, 'x');
  append_u32(payload, 0);
  CHECK(decode_error_bytes(payload) == DecodeErrc::too_large);

  ErrorReply long_text{Status::not_found, std::string(kMaxErrorText + 100, 'y'), {}};
  ErrorReply decoded;
  REQUIRE_FALSE(decode_error(encode_reply(long_text), decoded));
  CHECK(decoded.message == std::string(kMaxErrorText, 'y'));

  // A multi-byte character straddling the limit is dropped whole.
  ErrorReply utf8{Status::not_found, std::string(kMaxErrorText - 1, 'z') + "\xC3\xA9", {}};
  REQUIRE_FALSE(decode_error(encode_reply(utf8), decoded));
  CHECK(decoded.message == std::string(kMaxErrorText - 1, 'z'));

  ErrorReply many{Status::missing_shares, "m", std::vector<Id>(kMaxBatchItems + 5, make_id(3))};
  REQUIRE_FALSE(decode_error(encode_reply(many), decoded));
  CHECK(decoded.missing.size() == kMaxBatchItems);

  Bytes over_missing = encode_reply(ErrorReply{Status::missing_shares, "", {}});
  over_missing.resize(over_missing.size() - 4);
  append_u32(over_missing, static_cast<std::uint32_t>(kMaxBatchItems + 1));
  CHECK(decode_error_bytes(over_missing) == DecodeErrc::too_large);

  REQUIRE_FALSE(decode_error(encode_reply(ErrorReply{Status::ok, "odd", {}}), decoded));
  CHECK(decoded.status == Status::internal);
}

TEST_CASE("lying lengths and counts allocate nothing large") {
  const std::uint32_t huge = 0xFFFFFFFFu;
  Bytes has;
  append_u32(has, huge);
  Bytes put;
  append_u32(put, 1);
  append_id(put, make_id(1));
  append_u32(put, huge);
  Bytes put_count;
  append_u32(put_count, static_cast<std::uint32_t>(kMaxBatchItems));
  Bytes commit_refs;
  append_id(commit_refs, make_id(1));
  append_u64(commit_refs, 1);
  append_u32(commit_refs, static_cast<std::uint32_t>(kMaxRefs));  // in bounds, data absent
  Bytes list;
  append_u32(list, static_cast<std::uint32_t>(kMaxListItems));  // in bounds, data absent
  Bytes record;
  append_u64(record, 1);
  append_u32(record, static_cast<std::uint32_t>(kMaxEntryBytes));
  Bytes error{1};
  append_u32(error, huge);

  std::error_code ec;
  CHECK(largest_allocation_during([&] { ec = decode_request_bytes(Op::has_shares, has); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::too_large);
  CHECK(largest_allocation_during([&] { ec = decode_request_bytes(Op::put_shares, put); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::too_large);
  CHECK(largest_allocation_during([&] { ec = decode_request_bytes(Op::put_shares, put_count); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::truncated);
  CHECK(largest_allocation_during([&] { ec = decode_request_bytes(Op::commit, commit_refs); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::truncated);
  CHECK(largest_allocation_during([&] { ec = decode_reply_bytes(Op::list_files, list); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::truncated);
  CHECK(largest_allocation_during([&] { ec = decode_reply_bytes(Op::get_file, record); }) <
        kSmallAllocation);
  CHECK(ec == DecodeErrc::truncated);
  CHECK(largest_allocation_during([&] { ec = decode_error_bytes(error); }) < kSmallAllocation);
  CHECK(ec == DecodeErrc::too_large);
}

TEST_CASE("the allocation probe sees large allocations") {
  // Guards the test above against a probe that never records anything.
  HasShares big;
  big.ids.assign(kMaxBatchItems, make_id(1));
  const Bytes payload = encode_request(big);
  CHECK(largest_allocation_during([&] { (void)decode_request_bytes(Op::has_shares, payload); }) >=
        kMaxBatchItems * sizeof(Id));
}

TEST_CASE("large batches encode with a single allocation") {
  PutShares put;
  for (std::uint8_t i = 0; i < 4; ++i)
    put.shares.push_back({make_id(i), make_bytes(1u << 20, i)});
  const std::size_t payload_size = 4 + 4 * (32 + 4 + (1u << 20));
  Bytes payload;
  CHECK(largest_allocation_during([&] { payload = encode_request(put); }) == payload_size);
  CHECK(payload.size() == payload_size);
  Bytes frame;
  CHECK(largest_allocation_during([&] { frame = encode_request_frame(put); }) ==
        payload_size + kFrameHeaderBytes);
  CHECK(frame.size() == payload_size + kFrameHeaderBytes);
}

TEST_CASE("a reply encodes into the memory it is given, when it has the room") {
  Shares shares;
  for (std::uint8_t i = 0; i < 3; ++i)
    shares.blobs.push_back(make_bytes(1u << 20, i));
  const Reply reply{shares};
  const Bytes expected_frame = encode_reply_frame(reply);
  const Bytes expected_payload = encode_reply(reply);

  Bytes memory(8u << 20, 0xee);  // what a request left behind
  const std::uint8_t* at = memory.data();
  CHECK(largest_allocation_during([&] { encode_reply_frame(reply, memory); }) < kSmallAllocation);
  CHECK(memory == expected_frame);
  CHECK(memory.data() == at);
  CHECK(largest_allocation_during([&] { encode_reply(reply, memory); }) < kSmallAllocation);
  CHECK(memory == expected_payload);
  CHECK(memory.data() == at);

  // Too little room: one allocation of the reply's size.
  Bytes small(100, 0xee);
  CHECK(largest_allocation_during([&] { encode_reply_frame(reply, small); }) ==
        expected_frame.size());
  CHECK(small == expected_frame);
}

TEST_CASE("status helpers") {
  CHECK(status_of(Empty{}) == Status::ok);
  CHECK(status_of(FileInfo{}) == Status::ok);
  CHECK(status_of(ErrorReply{Status::conflict, "", {}}) == Status::conflict);
  CHECK(status_of(ErrorReply{Status::ok, "", {}}) == Status::internal);
  CHECK(status_for(DecodeErrc::too_large) == Status::too_large);
  CHECK(status_for(DecodeErrc::unknown_op) == Status::unsupported);
  CHECK(status_for(DecodeErrc::truncated) == Status::bad_request);
  CHECK(status_for(DecodeErrc::invalid_value) == Status::bad_request);
}

TEST_CASE("decode errors have readable messages") {
  CHECK(std::string(decode_category().name()) == "splitfs-protocol");
  std::vector<std::string> seen;
  for (DecodeErrc e :
       {DecodeErrc::truncated, DecodeErrc::trailing_bytes, DecodeErrc::too_large,
        DecodeErrc::unknown_op, DecodeErrc::unknown_status, DecodeErrc::invalid_value}) {
    const std::error_code ec = e;
    CHECK(ec.category() == decode_category());
    CHECK_FALSE(ec.message().empty());
    for (const std::string& other : seen)
      CHECK(other != ec.message());
    seen.push_back(ec.message());
  }
  CHECK(std::error_code(DecodeErrc::too_large).message().find("bound") != std::string::npos);
}

// ---- frames ---------------------------------------------------------------------------------

TEST_CASE("frames carry length, kind and payload") {
  const Request request = GetFile{make_id(5)};
  const Bytes frame = encode_request_frame(request);
  Bytes expected;
  append_u32(expected, 33);
  expected.push_back(static_cast<std::uint8_t>(Op::get_file));
  append_id(expected, make_id(5));
  CHECK(frame == expected);

  const Bytes empty_reply = encode_reply_frame(Empty{});
  CHECK(empty_reply == Bytes{0, 0, 0, 1, 0});

  const ErrorReply error{Status::conflict, "old", {}};
  const Bytes error_frame = encode_reply_frame(error);
  REQUIRE(error_frame.size() > kFrameHeaderBytes);
  CHECK(error_frame[4] == static_cast<std::uint8_t>(Status::conflict));
  CHECK(Bytes(error_frame.begin() + kFrameHeaderBytes, error_frame.end()) == encode_reply(error));
}

TEST_CASE("frames decode back to requests and replies") {
  for (const Request& request : sample_requests()) {
    CAPTURE(request.index());
    FrameParser parser;
    REQUIRE_FALSE(parser.feed(encode_request_frame(request)));
    auto frame = parser.next();
    REQUIRE(frame);
    Request decoded;
    REQUIRE_FALSE(decode_request_frame(*frame, decoded));
    CHECK(decoded == request);
  }
  for (const auto& [op, reply] : sample_replies()) {
    CAPTURE(op, reply.index());
    FrameParser parser;
    REQUIRE_FALSE(parser.feed(encode_reply_frame(reply)));
    auto frame = parser.next();
    REQUIRE(frame);
    Reply decoded;
    REQUIRE_FALSE(decode_reply_frame(op, *frame, decoded));
    CHECK(decoded == reply);
  }
  for (const ErrorReply& error : sample_errors()) {
    FrameParser parser;
    REQUIRE_FALSE(parser.feed(encode_reply_frame(error)));
    auto frame = parser.next();
    REQUIRE(frame);
    Reply decoded;
    REQUIRE_FALSE(decode_reply_frame(Op::get_file, *frame, decoded));
    CHECK(decoded == Reply{error});
  }
}

TEST_CASE("a gathered request is the encoded one, its large blobs left in place") {
  std::vector<Request> requests = sample_requests();
  PutShares large;
  for (std::uint8_t i = 0; i < 3; ++i)
    large.shares.push_back({make_id(i), make_bytes(200000, i)});
  large.shares.push_back({make_id(9), make_bytes(100, 9)});  // small: copied with the fields
  requests.emplace_back(large);
  for (const Request& request : requests) {
    CAPTURE(request.index());
    const Gathered gathered = gather_request_frame(request);
    Bytes joined;
    for (const ByteView piece : gathered.pieces())
      joined.insert(joined.end(), piece.begin(), piece.end());
    CHECK(joined == encode_request_frame(request));
    const Gathered gathered_body = gather_request(request);
    Bytes body;
    for (const ByteView piece : gathered_body.pieces())
      body.insert(body.end(), piece.begin(), piece.end());
    CHECK(body == encode_request(request));
  }

  const Request& sent = requests.back();
  const Gathered gathered = gather_request_frame(sent);
  const auto& shares = std::get<PutShares>(sent).shares;
  REQUIRE(gathered.references.size() == 3);
  for (std::size_t i = 0; i < 3; ++i)
    CHECK(gathered.references[i].bytes.data() == shares[i].data.data());
  CHECK(gathered.fields.size() < 1024);
}

TEST_CASE("reply frames must agree with their error payload") {
  Frame frame;
  frame.kind = static_cast<std::uint8_t>(Status::not_found);
  frame.payload = encode_reply(ErrorReply{Status::conflict, "x", {}});
  Reply out;
  CHECK(decode_reply_frame(Op::get_file, frame, out) == DecodeErrc::invalid_value);
  frame.kind = 12;
  CHECK(decode_reply_frame(Op::get_file, frame, out) == DecodeErrc::unknown_status);
  frame.kind = 0;
  CHECK(decode_reply_frame(Op::get_file, frame, out) == DecodeErrc::truncated);
  Frame request_frame{42, {}};
  Request request;
  CHECK(decode_request_frame(request_frame, request) == DecodeErrc::unknown_op);
}

TEST_CASE("the frame parser reassembles any split of the input") {
  Bytes stream;
  std::vector<Request> sent = sample_requests();
  for (const Request& request : sent) {
    const Bytes frame = encode_request_frame(request);
    stream.insert(stream.end(), frame.begin(), frame.end());
  }
  auto take_all = [](FrameParser& parser, std::vector<Request>& got) {
    while (auto frame = parser.next()) {
      Request request;
      REQUIRE_FALSE(decode_request_frame(*frame, request));
      got.push_back(std::move(request));
    }
  };

  SECTION("byte by byte") {
    FrameParser parser;
    std::vector<Request> got;
    for (std::uint8_t b : stream) {
      REQUIRE_FALSE(parser.feed(ByteView(&b, 1)));
      take_all(parser, got);
    }
    CHECK(got == sent);
    CHECK(parser.buffered() == 0);
  }
  SECTION("all at once") {
    FrameParser parser;
    REQUIRE_FALSE(parser.feed(stream));
    CHECK(parser.buffered() == stream.size());
    std::vector<Request> got;
    take_all(parser, got);
    CHECK(got == sent);
    CHECK(parser.buffered() == 0);
    CHECK_FALSE(parser.next());
  }
  SECTION("random splits, frames taken late") {
    std::mt19937 rng(1234);
    for (int round = 0; round < 50; ++round) {
      FrameParser parser;
      std::vector<Request> got;
      std::size_t pos = 0;
      while (pos < stream.size()) {
        const std::size_t n = std::min<std::size_t>(stream.size() - pos, rng() % 80);
        REQUIRE_FALSE(parser.feed(ByteView(stream).subspan(pos, n)));
        pos += n;
        if (rng() % 3 == 0)
          take_all(parser, got);
      }
      take_all(parser, got);
      CHECK(got == sent);
      CHECK(parser.buffered() == 0);
    }
  }
}

TEST_CASE("the frame parser holds a partial frame back") {
  const Bytes frame = encode_request_frame(GetFile{make_id(1)});
  FrameParser parser;
  REQUIRE_FALSE(parser.feed(ByteView(frame).first(frame.size() - 1)));
  CHECK_FALSE(parser.next());
  CHECK(parser.buffered() == frame.size() - 1);
  REQUIRE_FALSE(parser.feed(ByteView(frame).last(1)));
  auto got = parser.next();
  REQUIRE(got);
  CHECK(got->kind == static_cast<std::uint8_t>(Op::get_file));
  CHECK(got->payload == Bytes(frame.begin() + kFrameHeaderBytes, frame.end()));
}

TEST_CASE("the frame parser tells the length the frame under way announces and what is to come") {
  const Bytes frame = encode_request_frame(GetFile{make_id(1)});
  const std::uint32_t length = static_cast<std::uint32_t>(frame.size() - 4);
  FrameParser parser;
  CHECK_FALSE(parser.announced());
  CHECK(parser.missing() == 0);
  REQUIRE_FALSE(parser.feed(ByteView(frame).first(3)));
  CHECK_FALSE(parser.announced());  // three bytes of the length field
  CHECK(parser.missing() == 0);
  REQUIRE_FALSE(parser.feed(ByteView(frame).subspan(3, 1)));
  CHECK(parser.announced() == length);
  REQUIRE_FALSE(parser.feed(ByteView(frame).subspan(4, 10)));
  CHECK(parser.announced() == length);  // its payload under way
  CHECK(parser.missing() == frame.size() - 14);
  REQUIRE_FALSE(parser.feed(ByteView(frame).subspan(14)));
  CHECK_FALSE(parser.announced());  // whole: none under way until the next header
  CHECK(parser.missing() == 0);
  REQUIRE_FALSE(parser.feed(Bytes{0, 0, 1, 0, 2}));
  CHECK(parser.announced() == 256u);
  CHECK(parser.missing() == 255u);
  CHECK(parser.next());

  // Received in place: what comes into a prepared payload counts too.
  const Bytes large = encode_request_frame(PutShares{{{make_id(2), Bytes(1u << 20, 7)}}});
  FrameParser in_place;
  REQUIRE_FALSE(in_place.feed(ByteView(large).first(kFrameHeaderBytes)));
  CHECK(in_place.missing() == large.size() - kFrameHeaderBytes);
  const MutableByteView space = in_place.prepare(64u << 10);
  const std::size_t n = std::min(space.size(), large.size() - kFrameHeaderBytes);
  std::copy_n(large.begin() + kFrameHeaderBytes, n, space.begin());
  REQUIRE_FALSE(in_place.commit(n));
  CHECK(in_place.missing() == large.size() - kFrameHeaderBytes - n);
}

TEST_CASE("a frame with only a kind byte has an empty payload") {
  FrameParser parser;
  REQUIRE_FALSE(parser.feed(Bytes{0, 0, 0, 1, 7}));
  auto frame = parser.next();
  REQUIRE(frame);
  CHECK(frame->kind == 7);
  CHECK(frame->payload.empty());
}

TEST_CASE("the frame parser refuses bad headers before their body") {
  SECTION("over the bound, at the header") {
    FrameParser parser(100);
    Bytes header;
    append_u32(header, 101);
    CHECK(parser.feed(header) == DecodeErrc::too_large);
    CHECK_FALSE(parser.next());
    CHECK(parser.feed(Bytes{1, 2, 3}) == DecodeErrc::too_large);
  }
  SECTION("exactly at the bound") {
    FrameParser parser(100);
    Bytes frame;
    append_u32(frame, 100);
    frame.resize(frame.size() + 100, 5);
    REQUIRE_FALSE(parser.feed(frame));
    auto got = parser.next();
    REQUIRE(got);
    CHECK(got->payload.size() == 99);
  }
  SECTION("zero length") {
    FrameParser parser;
    CHECK(parser.feed(Bytes{0, 0, 0, 0}) == DecodeErrc::invalid_value);
    CHECK_FALSE(parser.next());
  }
  SECTION("a 4 GiB claim allocates nothing") {
    FrameParser parser;
    std::error_code ec;
    CHECK(largest_allocation_during([&] {
            ec = parser.feed(Bytes{0xFF, 0xFF, 0xFF, 0xFF, 3});
          }) < kSmallAllocation);
    CHECK(ec == DecodeErrc::too_large);
  }
  SECTION("a bad header behind whole frames fails the feed that brings it") {
    FrameParser parser(1000);
    Bytes stream = encode_request_frame(Hello{});
    append_u32(stream, 5000);
    CHECK(parser.feed(stream) == DecodeErrc::too_large);
    CHECK_FALSE(parser.next());
  }
  SECTION("a header split across feeds") {
    FrameParser parser(100);
    REQUIRE_FALSE(parser.feed(Bytes{0, 0}));
    REQUIRE_FALSE(parser.feed(Bytes{1}));
    CHECK(parser.feed(Bytes{0}) == DecodeErrc::too_large);
  }
}

TEST_CASE("the frame parser carries a maximum batch in small reads") {
  PutShares put;
  for (std::uint8_t i = 0; i < 8; ++i) {
    put.shares.push_back({make_id(i), make_bytes(kMaxBatchBytes / 8, i)});
  }
  const Bytes frame = encode_request_frame(put);
  FrameParser parser;
  std::optional<Frame> got;
  for (std::size_t pos = 0; pos < frame.size(); pos += 16384) {
    const std::size_t n = std::min<std::size_t>(16384, frame.size() - pos);
    REQUIRE_FALSE(parser.feed(ByteView(frame).subspan(pos, n)));
    auto next = parser.next();
    if (next) {
      REQUIRE_FALSE(got);
      got = std::move(next);
    }
  }
  REQUIRE(got);
  Request decoded;
  REQUIRE_FALSE(decode_request_frame(*got, decoded));
  CHECK(decoded == Request{put});
  CHECK(parser.buffered() == 0);
}

TEST_CASE("the frame parser receives large payloads in place") {
  std::vector<Request> sent;
  PutShares put;
  for (std::uint8_t i = 0; i < 3; ++i)
    put.shares.push_back({make_id(i), make_bytes(200000, i)});
  sent.emplace_back(put);
  sent.emplace_back(GetFile{make_id(7)});
  put.shares.pop_back();
  sent.emplace_back(put);
  Bytes stream;
  for (const Request& request : sent) {
    const Bytes frame = encode_request_frame(request);
    stream.insert(stream.end(), frame.begin(), frame.end());
  }
  std::mt19937 rng(7);
  FrameParser parser;
  std::vector<std::pair<const std::uint8_t*, std::size_t>> received;  // where each read went
  std::vector<Frame> frames;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    const std::size_t want = 1 + rng() % 20000;
    const MutableByteView space = parser.prepare(want);
    REQUIRE(!space.empty());
    REQUIRE(space.size() <= want);
    // A read may return fewer bytes than it had room for.
    const std::size_t n = std::min({space.size(), stream.size() - pos, 1 + rng() % space.size()});
    std::copy_n(stream.begin() + static_cast<std::ptrdiff_t>(pos), n, space.begin());
    received.emplace_back(space.data(), n);
    REQUIRE_FALSE(parser.commit(n));
    pos += n;
    while (auto frame = parser.next())
      frames.push_back(std::move(*frame));
  }
  REQUIRE(frames.size() == sent.size());
  std::size_t in_place = 0;
  for (std::size_t i = 0; i < frames.size(); ++i) {
    Request decoded;
    REQUIRE_FALSE(decode_request_frame(frames[i], decoded));
    CHECK(decoded == sent[i]);
    const std::uint8_t* begin = frames[i].payload.data();
    for (const auto& [at, n] : received) {
      if (at >= begin && at < begin + frames[i].payload.size())
        in_place += n;
    }
  }
  CHECK(parser.buffered() == 0);
  // All but the headers and the small pieces around them went straight into the payloads.
  CHECK(in_place > stream.size() * 9 / 10);

  SECTION("a bad header received in place is refused") {
    FrameParser bad;
    const MutableByteView space = bad.prepare(100);
    const Bytes zero_length{0, 0, 0, 0, 1};
    std::copy(zero_length.begin(), zero_length.end(), space.begin());
    CHECK(bad.commit(zero_length.size()) == DecodeErrc::invalid_value);
    CHECK_FALSE(bad.next());
    CHECK(bad.feed(Bytes{1}) == DecodeErrc::invalid_value);
  }
}

TEST_CASE("the frame parser receives into a payload given back") {
  const Bytes first = encode_request_frame(PutShares{{{make_id(1), make_bytes(300000, 1)}}});
  const Bytes second = encode_request_frame(PutShares{{{make_id(2), make_bytes(200000, 2)}}});
  FrameParser parser;
  REQUIRE_FALSE(parser.feed(first));
  auto frame = parser.next();
  REQUIRE(frame);
  const std::uint8_t* memory = frame->payload.data();
  parser.recycle(std::move(frame->payload));
  frame.reset();

  // Received in place, into the memory given back, from its start.
  std::size_t pos = 0;
  while (pos < second.size()) {
    const MutableByteView space = parser.prepare(16u << 10);
    const std::size_t n = std::min(space.size(), second.size() - pos);
    std::copy_n(second.begin() + static_cast<std::ptrdiff_t>(pos), n, space.begin());
    REQUIRE_FALSE(parser.commit(n));
    pos += n;
  }
  frame = parser.next();
  REQUIRE(frame);
  CHECK(frame->payload.data() == memory);
  Request decoded;
  REQUIRE_FALSE(decode_request_frame(*frame, decoded));
  CHECK(decoded == Request{PutShares{{{make_id(2), make_bytes(200000, 2)}}}});

  // Once taken, the memory is not handed out twice.
  REQUIRE_FALSE(parser.feed(first));
  auto third = parser.next();
  REQUIRE(third);
  CHECK(third->payload.data() != memory);

  SECTION("a payload over the bound is not kept") {
    FrameParser kept;
    Bytes huge;
    huge.reserve(FrameParser::kMaxSpareBytes + 1);
    const std::uint8_t* huge_memory = huge.data();
    kept.recycle(std::move(huge));
    REQUIRE_FALSE(kept.feed(first));
    auto got = kept.next();
    REQUIRE(got);
    CHECK(got->payload.data() != huge_memory);
  }
}

TEST_CASE("the frame parser stays linear over many small frames") {
  // Erasing the front of a buffer per frame would move gigabytes in the bulk case below (tens of
  // seconds); the parser keeps both cases in milliseconds, far under the generous limit.
  const Bytes one = encode_request_frame(GetFile{make_id(1)});
  Bytes stream;
  constexpr std::size_t kFrames = 300000;
  stream.reserve(one.size() * kFrames);
  for (std::size_t i = 0; i < kFrames; ++i)
    stream.insert(stream.end(), one.begin(), one.end());
  FrameParser parser;
  std::size_t frames = 0;
  for (std::size_t pos = 0; pos < stream.size(); pos += 4096) {
    const std::size_t n = std::min<std::size_t>(4096, stream.size() - pos);
    REQUIRE_FALSE(parser.feed(ByteView(stream).subspan(pos, n)));
    while (parser.next())
      ++frames;
  }
  CHECK(frames == kFrames);
  // Everything fed at once, then drained one frame at a time.
  FrameParser bulk;
  REQUIRE_FALSE(bulk.feed(stream));
  frames = 0;
  const auto start = std::chrono::steady_clock::now();
  while (bulk.next())
    ++frames;
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
  CHECK(frames == kFrames);
}

}  // namespace splitfs::protocol
