#include <catch2/catch.hpp>

#include "core/manifest.hpp"

using namespace splitfs;
using namespace splitfs::core;

namespace {
Manifest sample(std::uint64_t size) {
  Manifest m;
  m.entry = Entry{"docs/report.txt", size, 3, 1700000000123456789, 1690000000000000000, 0640};
  m.segment_bytes = 4096;
  for (std::uint64_t i = 0; i < m.segment_count() * kServers; ++i) {
    Id id{};
    id[0] = static_cast<std::uint8_t>(i);
    id[31] = 0xee;
    m.shares.push_back(id);
  }
  return m;
}
}  // namespace

TEST_CASE("manifests round trip") {
  for (std::uint64_t size : {0u, 1u, 4096u, 4097u, 100000u}) {
    const Manifest m = sample(size);
    Manifest back;
    REQUIRE_FALSE(decode_manifest(encode_manifest(m), back));
    CHECK(back == m);
  }
}

TEST_CASE("entries round trip") {
  const Entry e = sample(10).entry;
  Entry back;
  REQUIRE_FALSE(decode_entry(encode_entry(e), back));
  CHECK(back == e);
}

TEST_CASE("segment lengths cover the file") {
  const Manifest m = sample(4096 * 2 + 5);
  CHECK(m.segment_count() == 3);
  CHECK(m.segment_length(0) == 4096);
  CHECK(m.segment_length(2) == 5);
}

TEST_CASE("malformed manifests are rejected at every truncation") {
  const Bytes good = encode_manifest(sample(10000));
  Manifest out;
  for (std::size_t n = 0; n < good.size(); ++n) {
    CAPTURE(n);
    CHECK(decode_manifest(ByteView(good).first(n), out));
  }
  Bytes trailing = good;
  trailing.push_back(0);
  CHECK(decode_manifest(trailing, out) == ManifestErrc::malformed);
  Bytes format = good;
  format[0] = 9;
  CHECK(decode_manifest(format, out) == ManifestErrc::unsupported_format);
}

TEST_CASE("inconsistent layouts are rejected") {
  Manifest out;
  Manifest wrong_count = sample(10000);
  wrong_count.shares.pop_back();
  CHECK(decode_manifest(encode_manifest(wrong_count), out) == ManifestErrc::inconsistent);
  Manifest odd_segment = sample(10000);
  odd_segment.segment_bytes = 3000;
  CHECK(decode_manifest(encode_manifest(odd_segment), out) == ManifestErrc::inconsistent);
  Manifest no_servers = sample(0);
  no_servers.servers = 0;
  CHECK(decode_manifest(encode_manifest(no_servers), out) == ManifestErrc::inconsistent);
  Manifest huge_size = sample(10000);
  huge_size.entry.size = ~std::uint64_t{0} - 5;
  CHECK(decode_manifest(encode_manifest(huge_size), out));
}
