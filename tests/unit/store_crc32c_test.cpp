#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string_view>

#include "store/crc32c.hpp"

using splitfs::Bytes;
using splitfs::ByteView;
using namespace splitfs::store;

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
  std::mt19937_64 rng(7);
  Bytes data(4099);
  for (auto& b : data)
    b = static_cast<std::uint8_t>(rng());
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
