// The receive watermark a TLS reader sets: never more than what is surely still to come (the rest
// less what TLS may hold already), so a read never waits for bytes that are not on their way.
#include <catch2/catch.hpp>

#include "common/watermark.hpp"

using splitfs::receive_watermark;

TEST_CASE("the receive watermark stays well below the rest of a message") {
  CHECK(receive_watermark(0) == 1);  // nothing known: wake for any byte
  CHECK(receive_watermark(16u << 10) == 1);
  CHECK(receive_watermark(256u << 10) == 1);
  for (std::size_t rest = 1; rest <= (8u << 20); rest = rest * 3 / 2 + 1) {
    INFO("rest " << rest);
    const int mark = receive_watermark(rest);
    REQUIRE(mark >= 1);
    CHECK(static_cast<std::size_t>(mark) <= 256u << 10);
    if (mark > 1)
      CHECK(static_cast<std::size_t>(mark) + (128u << 10) <= rest);
  }
  // A large rest: a reader wakes once for many TLS records of 16 KiB.
  CHECK(receive_watermark(4u << 20) == 256 << 10);
  CHECK(receive_watermark(400u << 10) == 256 << 10);
}
