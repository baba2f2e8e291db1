// Hex helpers: the only text form ids take on the wire and in paths.
#include <string>

#include <catch2/catch.hpp>

#include "common/bytes.hpp"

namespace splitfs {

TEST_CASE("to_hex writes two lowercase digits per byte") {
  CHECK(to_hex(Bytes{}).empty());
  CHECK(to_hex(Bytes{0x00, 0x01, 0x7F, 0x80, 0xAB, 0xFF}) == "00017f80abff");
}

TEST_CASE("from_hex accepts either case and round-trips every byte") {
  Bytes all(256);
  for (std::size_t i = 0; i < all.size(); ++i)
    all[i] = static_cast<std::uint8_t>(i);
  const std::string hex = to_hex(all);
  CHECK(hex.size() == 512);
  CHECK(from_hex(hex) == all);
  std::string upper = hex;
  for (char& c : upper) {
    if (c >= 'a' && c <= 'f')
      c = static_cast<char>(c - 'a' + 'A');
  }
  CHECK(from_hex(upper) == all);
  CHECK(from_hex("aB") == Bytes{0xAB});
  CHECK(from_hex("") == Bytes{});
}

TEST_CASE("from_hex rejects odd lengths and non-hex digits") {
  CHECK_FALSE(from_hex("a"));
  CHECK_FALSE(from_hex("abc"));
  for (std::string bad : {"0g", "g0", "0 ", " 0", "0x", "-1", "+1", "0:", "0@", "0`", "0G"}) {
    CAPTURE(bad);
    CHECK_FALSE(from_hex(bad));
  }
  CHECK_FALSE(from_hex(std::string("0\0", 2)));
  CHECK_FALSE(from_hex(std::string("0\xFF", 2)));
}

TEST_CASE("id_from_hex takes exactly 64 digits") {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>(i * 9 + 1);
  const std::string hex = to_hex(id);
  REQUIRE(hex.size() == 64);
  CHECK(id_from_hex(hex) == id);
  CHECK_FALSE(id_from_hex(hex.substr(2)));
  CHECK_FALSE(id_from_hex(hex.substr(1)));
  CHECK_FALSE(id_from_hex(hex + "00"));
  CHECK_FALSE(id_from_hex(""));
  std::string bad = hex;
  bad[63] = 'z';
  CHECK_FALSE(id_from_hex(bad));
}

TEST_CASE("as_bytes views text without copying") {
  const std::string_view text = "hi";
  const ByteView view = as_bytes(text);
  CHECK(view.size() == 2);
  CHECK(static_cast<const void*>(view.data()) == static_cast<const void*>(text.data()));
  CHECK(view[0] == 'h');
}

}  // namespace splitfs
