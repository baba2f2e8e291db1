// A body read in pieces, as curl reads an upload: every split of the reads gives the joined bytes,
// and a seek anywhere (curl's rewind) goes on from there.
#include <catch2/catch.hpp>

#include <numeric>
#include <vector>

#include "common/pieces.hpp"

using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::PieceReader;

namespace {

Bytes numbered(std::size_t n, std::uint8_t first) {
  Bytes b(n);
  std::iota(b.begin(), b.end(), first);
  return b;
}

}  // namespace

TEST_CASE("a reader of pieces gives their bytes in order, from any position") {
  const std::vector<Bytes> parts{numbered(5, 0), {}, numbered(1, 50), numbered(300, 100), {}};
  const std::vector<ByteView> pieces(parts.begin(), parts.end());
  Bytes joined;
  for (const Bytes& part : parts)
    joined.insert(joined.end(), part.begin(), part.end());
  PieceReader reader(pieces);
  CHECK(reader.size() == joined.size());

  for (std::size_t room = 1; room <= joined.size() + 1; room += 7) {
    INFO("room " << room);
    for (std::size_t from = 0; from <= joined.size(); from += 13) {
      INFO("from " << from);
      REQUIRE(reader.seek(from));
      Bytes got;
      Bytes buffer(room);
      while (const std::size_t n = reader.read(buffer.data(), room)) {
        REQUIRE(n <= room);
        got.insert(got.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
      }
      CHECK(got == Bytes(joined.begin() + static_cast<std::ptrdiff_t>(from), joined.end()));
    }
  }
  CHECK(reader.seek(joined.size()));
  Bytes byte(1);
  CHECK(reader.read(byte.data(), 1) == 0);
  CHECK_FALSE(reader.seek(joined.size() + 1));

  PieceReader empty;
  CHECK(empty.size() == 0);
  CHECK(empty.read(byte.data(), 1) == 0);
  CHECK(empty.seek(0));
}
