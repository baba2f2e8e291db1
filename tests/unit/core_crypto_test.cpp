#include <catch2/catch.hpp>

#include "core/crypto.hpp"

using namespace splitfs;
using namespace splitfs::core;

namespace {
const KeySet& keys() {
  static const KeySet k = KeySet::derive(Key{1, 2, 3});
  return k;
}
Bytes text(std::string_view s) {
  return Bytes(s.begin(), s.end());
}
}  // namespace

TEST_CASE("derived keys differ per purpose and per content key") {
  const KeySet& a = keys();
  CHECK(a.share_id != a.share_enc);
  CHECK(a.file_id != a.record);
  CHECK(a.share_id != a.file_id);
  CHECK(KeySet::derive(Key{9}).share_id != a.share_id);
  CHECK(KeySet::derive(Key{1, 2, 3}).record == a.record);
}

TEST_CASE("shares round trip and are deterministic per content") {
  const Bytes plain = text("the quick brown fox jumps over the lazy dog");
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  CHECK(blob.size() == plain.size() + kShareOverhead);
  CHECK(seal_share(keys(), id, plain) == blob);
  // The plaintext does not appear in the blob.
  CHECK(std::search(blob.begin(), blob.end(), plain.begin(), plain.begin() + 10) == blob.end());
  Bytes out;
  REQUIRE(open_share(keys(), id, blob, out));
  CHECK(out == plain);
}

TEST_CASE("a tampered, truncated or misnamed share is rejected") {
  const Bytes plain(5000, 0x41);
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  Bytes out;
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{2500}, blob.size() - 1}) {
    Bytes bad = blob;
    bad[i] ^= 0x01;
    CHECK_FALSE(open_share(keys(), id, bad, out));
  }
  CHECK_FALSE(open_share(keys(), id, ByteView(blob).first(blob.size() - 1), out));
  CHECK_FALSE(open_share(keys(), id, ByteView(blob).first(10), out));
  const Bytes other = text("another share");
  const Id other_id = share_id(keys(), other);
  CHECK_FALSE(open_share(keys(), other_id, blob, out));
  // Another user's key cannot open it.
  const KeySet stranger = KeySet::derive(Key{7});
  CHECK_FALSE(open_share(stranger, id, blob, out));
}

TEST_CASE("records round trip with fresh nonces and are bound to their associated data") {
  const Key key = keys().record;
  const Bytes plain = text("manifest bytes");
  const Bytes aad = text("file 1 version 2");
  const Bytes a = seal_record(key, aad, plain);
  const Bytes b = seal_record(key, aad, plain);
  CHECK(a != b);
  Bytes out;
  REQUIRE(open_record(key, aad, a, out));
  CHECK(out == plain);
  CHECK_FALSE(open_record(key, text("file 1 version 1"), a, out));
  Bytes bad = a;
  bad.back() ^= 0x80;
  CHECK_FALSE(open_record(key, aad, bad, out));
  CHECK_FALSE(open_record(key, aad, ByteView(a).first(5), out));
}

TEST_CASE("keyed hashes depend on the key and the data") {
  const Bytes data = text("name");
  CHECK(keyed_hash(keys().file_id, data) == keyed_hash(keys().file_id, data));
  CHECK(keyed_hash(keys().file_id, data) != keyed_hash(keys().share_id, data));
  CHECK(keyed_hash(keys().file_id, data) != keyed_hash(keys().file_id, text("name2")));
}
