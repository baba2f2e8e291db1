#include <catch2/catch.hpp>

#include <cstdint>
#include <string_view>

#include "store/crc32c.hpp"
#include "tests/support/random_bytes.hpp"

using splitfs::Bytes;
using splitfs::ByteView;
using namespace splitfs::store;
using splitfs::testing::random_bytes;

TEST_CASE("crc32c matches the published check values") {
  CHECK(crc32c(splitfs::as_bytes("123456789")) == 0xe3069283u);
  CHECK(crc32c({}) == 0u);
  // RFC 3720 (iSCSI) appendix B.4 vectors.
  Bytes zeros(32, 0x00);
  CHECK(crc32c(zeros) == 0x8a9136aau);
  Bytes ones(32, 0xff);
  CHECK(crc32c(ones) == 0x62a8ab43u);
  Bytes ascending(32);
  for (std::size_t i = 0; i < ascending.size(); ++i)
    ascending[i] = static_cast<std::uint8_t>(i);
  CHECK(crc32c(ascending) == 0x46dd794eu);
  CHECK(crc32c_extend_portable(0, ascending) == 0x46dd794eu);
}

TEST_CASE("crc32c extends across splits and agrees with the portable table") {
  Bytes data = random_bytes(4099, 7);
  const ByteView all(data);
  const std::uint32_t whole = crc32c(all);
  CHECK(whole == crc32c_extend_portable(0, all));
  for (std::size_t split : {0u, 1u, 7u, 8u, 9u, 63u, 1000u, 4098u, 4099u}) {
    CAPTURE(split);
    CHECK(crc32c_extend(crc32c(all.first(split)), all.subspan(split)) == whole);
    CHECK(crc32c_extend_portable(crc32c_extend_portable(0, all.first(split)), all.subspan(split)) ==
          whole);
  }
  // Unaligned starts and odd lengths.
  for (std::size_t start = 0; start < 9; ++start) {
    for (std::size_t length : {0u, 1u, 5u, 8u, 17u, 255u}) {
      const ByteView part = all.subspan(start, length);
      CHECK(crc32c(part) == crc32c_extend_portable(0, part));
    }
  }
  data[100] ^= 0x01;
  CHECK(crc32c(data) != whole);
}

TEST_CASE("crc32c over long data, where the instruction runs three streams, agrees too") {
  const Bytes data = random_bytes(100'000, 11);
  const ByteView all(data);
  const std::uint32_t whole = crc32c_extend_portable(0, all);
  CHECK(crc32c(all) == whole);
  // Lengths around the three-stream step (3 x 2048 bytes), from unaligned starts.
  for (std::size_t start : {0u, 1u, 3u, 8u}) {
    for (std::size_t length : {6143u, 6144u, 6145u, 12288u, 12295u, 32768u, 32790u}) {
      CAPTURE(start, length);
      const ByteView part = all.subspan(start, length);
      CHECK(crc32c(part) == crc32c_extend_portable(0, part));
    }
  }
  for (std::size_t split : {1u, 6144u, 50'001u}) {
    CAPTURE(split);
    CHECK(crc32c_extend(crc32c(all.first(split)), all.subspan(split)) == whole);
  }
  // Every stream of a step counts: a change in the second or third block changes the sum.
  for (std::size_t at : {100u, 2048u + 100u, 4096u + 100u}) {
    Bytes changed(data.begin(), data.begin() + 6144);
    changed[at] ^= 0x40;
    CHECK(crc32c(changed) != crc32c(ByteView(data).first(6144)));
    CHECK(crc32c(changed) == crc32c_extend_portable(0, changed));
  }
}
