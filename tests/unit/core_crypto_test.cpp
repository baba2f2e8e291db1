#include <zstd.h>
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>

#include "core/crypto.hpp"
#include "tests/support/random_bytes.hpp"

using namespace splitfs;
using namespace splitfs::core;
using splitfs::testing::random_bytes;

namespace {
const KeySet& keys() {
  static const KeySet k = KeySet::derive(Key{1, 2, 3});
  return k;
}
Bytes text(std::string_view s) {
  return Bytes(s.begin(), s.end());
}
// Source-like text: lines drawn from a small vocabulary, so it compresses about as code does.
Bytes source_text(std::size_t size, std::uint64_t seed) {
  static const char* const words[] = {"int",    "return", "const", "std::vector", "template",
                                      "size_t", "if",     "for",   "namespace",   "auto",
                                      "value",  "count",  "(",     ")",           "{",
                                      "}",      ";",      "=",     "+",           "data"};
  std::mt19937_64 rng(seed);
  std::string out;
  while (out.size() < size) {
    const std::size_t n = 3 + rng() % 8;
    for (std::size_t i = 0; i < n; ++i) {
      out += words[rng() % std::size(words)];
      out += ' ';
    }
    out += '\n';
  }
  out.resize(size);
  return text(out);
}
Bytes zstd_frame(ByteView data, bool with_size) {
  Bytes out(ZSTD_compressBound(data.size()));
  std::size_t n = 0;
  if (with_size) {
    n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  } else {
    ZSTD_CCtx* ctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(ctx, ZSTD_c_contentSizeFlag, 0);
    n = ZSTD_compress2(ctx, out.data(), out.size(), data.data(), data.size());
    ZSTD_freeCCtx(ctx);
  }
  REQUIRE_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
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
  const bool compressible = GENERATE(false, true);
  const Bytes plain = compressible ? Bytes(5000, 0x41) : random_bytes(5000, 1);
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  REQUIRE((blob.size() < plain.size()) == compressible);
  Bytes out;
  for (std::size_t i :
       {std::size_t{0}, std::size_t{1}, std::size_t{13}, blob.size() / 2, blob.size() - 1}) {
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

TEST_CASE("shares that compress are stored compressed, under the id of their raw content") {
  const Bytes plain = source_text(64 << 10, 2);
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  // Source text shrinks to well under half; the ratio, not a size, is what is promised.
  CHECK(static_cast<double>(blob.size()) < 0.5 * static_cast<double>(plain.size()));
  CHECK(blob[0] == 2);
  CHECK(seal_share(keys(), id, plain) == blob);  // deterministic, so equal shares deduplicate
  Bytes out;
  REQUIRE(open_share(keys(), id, blob, out));
  CHECK(out == plain);
  // The same share sealed raw opens to the same bytes under the same id.
  const Bytes raw = seal_share(keys(), id, plain, Compression::none);
  CHECK(raw.size() == plain.size() + kShareOverhead);
  REQUIRE(open_share(keys(), id, raw, out));
  CHECK(out == plain);
}

TEST_CASE("data that does not compress is stored raw") {
  for (std::size_t size :
       {std::size_t{100}, std::size_t{1000}, std::size_t{64 << 10}, std::size_t{1 << 20}}) {
    const Bytes plain = random_bytes(size, size);
    const Id id = share_id(keys(), plain);
    const Bytes blob = seal_share(keys(), id, plain);
    CHECK(blob.size() == plain.size() + kShareOverhead);
    CHECK(blob[0] == 1);
  }
  // Half random, half text: compresses a little, not enough to pay.
  Bytes mixed = random_bytes(48 << 10, 3);
  const Bytes tail = source_text(8 << 10, 4);
  mixed.insert(mixed.end(), tail.begin(), tail.end());
  const Bytes blob = seal_share(keys(), share_id(keys(), mixed), mixed);
  CHECK(blob.size() == mixed.size() + kShareOverhead);
}

TEST_CASE("two different encodings of one share never share a nonce") {
  const Bytes plain = source_text(32 << 10, 5);
  const Id id = share_id(keys(), plain);
  const Bytes a = seal_encoded_share_for_testing(keys(), id, 1, zstd_frame(plain, true));
  Bytes other_frame(ZSTD_compressBound(plain.size()));
  other_frame.resize(
      ZSTD_compress(other_frame.data(), other_frame.size(), plain.data(), plain.size(), 1));
  const Bytes b = seal_encoded_share_for_testing(keys(), id, 1, other_frame);
  REQUIRE(a != b);
  CHECK(!std::equal(a.begin() + 1, a.begin() + 1 + kNonceBytes, b.begin() + 1));
  Bytes out;
  REQUIRE(open_share(keys(), id, a, out));
  CHECK(out == plain);
  REQUIRE(open_share(keys(), id, b, out));
  CHECK(out == plain);
}

TEST_CASE("decompression is bounded by the share's known length") {
  const Bytes plain = source_text(256 << 10, 6);
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  REQUIRE(blob[0] == 2);
  Bytes out;
  CHECK(open_share(keys(), id, blob, out, plain.size()));
  CHECK_FALSE(open_share(keys(), id, blob, out, plain.size() - 1));
  CHECK(out.empty());
  // Raw shares are held to the same bound.
  const Bytes raw = seal_share(keys(), id, plain, Compression::none);
  CHECK_FALSE(open_share(keys(), id, raw, out, plain.size() - 1));

  // A frame that expands far beyond the default bound (a "zip bomb") is refused before any
  // allocation of its size: 64 MiB of zeros compress to a few KiB.
  const Bytes zeros(64u << 20, 0);
  const Bytes bomb = seal_encoded_share_for_testing(keys(), id, 1, zstd_frame(zeros, true));
  CHECK(bomb.size() < (64u << 10));
  CHECK_FALSE(open_share(keys(), id, bomb, out));
  // A frame that does not say its size, trailing bytes after the frame, two frames, an unknown
  // encoding, and a frame of other content are all refused.
  CHECK_FALSE(open_share(
      keys(), id, seal_encoded_share_for_testing(keys(), id, 1, zstd_frame(plain, false)), out));
  Bytes trailing = zstd_frame(plain, true);
  trailing.push_back(0);
  CHECK_FALSE(open_share(keys(), id, seal_encoded_share_for_testing(keys(), id, 1, trailing), out));
  Bytes two = zstd_frame(plain, true);
  const Bytes again = zstd_frame(plain, true);
  two.insert(two.end(), again.begin(), again.end());
  CHECK_FALSE(open_share(keys(), id, seal_encoded_share_for_testing(keys(), id, 1, two), out));
  CHECK_FALSE(open_share(
      keys(), id, seal_encoded_share_for_testing(keys(), id, 7, zstd_frame(plain, true)), out));
  const Bytes other = source_text(256 << 10, 7);
  CHECK_FALSE(open_share(
      keys(), id, seal_encoded_share_for_testing(keys(), id, 1, zstd_frame(other, true)), out));
  CHECK(out.empty());
}

TEST_CASE("a share opens in its own memory as it opens into a buffer, or is refused alike") {
  const bool compressible = GENERATE(false, true);
  const Bytes plain = compressible ? source_text(64 << 10, 10) : random_bytes(64 << 10, 11);
  const Id id = share_id(keys(), plain);
  const Bytes blob = seal_share(keys(), id, plain);
  REQUIRE((blob[0] == 2) == compressible);
  Bytes opened = blob;
  const auto view = open_share_in_place(keys(), id, opened);
  REQUIRE(view);
  CHECK(Bytes(view->begin(), view->end()) == plain);
  // A raw share's plaintext is where its ciphertext was, between the format bytes and the tag.
  if (!compressible) {
    CHECK(view->data() == opened.data() + 2);
    CHECK(opened.size() == blob.size());
  }
  // Whether a copy of `sealed` opens in place.
  auto opens = [&](Bytes sealed, const Id& as = {}, std::size_t max = kMaxSharePlainBytes,
                   const KeySet& with = keys()) {
    return open_share_in_place(with, as == Id{} ? id : as, sealed, max).has_value();
  };
  CHECK(opens(blob, id, plain.size()));
  CHECK_FALSE(opens(blob, id, plain.size() - 1));
  for (std::size_t i :
       {std::size_t{0}, std::size_t{1}, std::size_t{13}, blob.size() / 2, blob.size() - 1}) {
    Bytes bad = blob;
    bad[i] ^= 0x01;
    CHECK_FALSE(opens(bad));
  }
  CHECK_FALSE(opens(Bytes(blob.begin(), blob.end() - 1)));
  CHECK_FALSE(opens(Bytes(blob.begin(), blob.begin() + 10)));
  CHECK_FALSE(opens(blob, share_id(keys(), text("another share"))));
  CHECK_FALSE(opens(blob, id, kMaxSharePlainBytes, KeySet::derive(Key{7})));
}

TEST_CASE("compressed_fraction tells text from random data") {
  CHECK(compressed_fraction(source_text(16 << 10, 8)) < 0.5);
  CHECK(compressed_fraction(random_bytes(16 << 10, 9)) > 0.99);
  CHECK(compressed_fraction({}) == 1.0);
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
