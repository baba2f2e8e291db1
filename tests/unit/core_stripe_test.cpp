#include <catch2/catch.hpp>

#include <numeric>

#include "core/stripe.hpp"

using namespace splitfs;
using namespace splitfs::core;

namespace {
Bytes pattern(std::size_t n) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>(i * 7 + i / 1024);
  return b;
}
}  // namespace

TEST_CASE("chunk k goes to server k mod 2: odd chunks (1-based) to HTTPS") {
  CHECK(server_of_chunk(0) == kHttpsServer);
  CHECK(server_of_chunk(1) == kTcpServer);
  CHECK(server_of_chunk(2) == kHttpsServer);
  CHECK(chunk_count(0) == 0);
  CHECK(chunk_count(1) == 1);
  CHECK(chunk_count(1024) == 1);
  CHECK(chunk_count(1025) == 2);
  CHECK(chunks_on_server(5, kHttpsServer) == 3);
  CHECK(chunks_on_server(5, kTcpServer) == 2);
}

TEST_CASE("striping sends alternate chunks to each share and unstriping restores the segment") {
  for (std::size_t size :
       {0u, 1u, 1023u, 1024u, 1025u, 2047u, 2048u, 2049u, 5u * 1024u + 3u, 256u * 1024u}) {
    CAPTURE(size);
    const Bytes segment = pattern(size);
    std::array<Bytes, 2> shares;
    stripe(segment, shares);
    REQUIRE(shares[0].size() == share_length(size, 0));
    REQUIRE(shares[1].size() == share_length(size, 1));
    REQUIRE(shares[0].size() + shares[1].size() == size);
    // Chunk k of the segment must sit in share k % 2 at position k / 2.
    for (std::size_t k = 0; k * 1024 < size; ++k) {
      const std::size_t n = std::min<std::size_t>(1024, size - k * 1024);
      const Bytes& share = shares[k % 2];
      REQUIRE(std::equal(segment.begin() + k * 1024, segment.begin() + k * 1024 + n,
                         share.begin() + (k / 2) * 1024));
    }
    Bytes back(size);
    const std::array<ByteView, 2> views{shares[0], shares[1]};
    unstripe(views, back);
    CHECK(back == segment);
    // Into a buffer it sizes itself, whatever it held before.
    Bytes rebuilt(7, 0xee);
    unstripe(views, size, rebuilt);
    CHECK(rebuilt == segment);
    // Striping again into shares that hold bytes replaces them.
    const Bytes other = pattern(size / 2);
    stripe(other, shares);
    CHECK(shares[0].size() + shares[1].size() == other.size());
    unstripe(std::array<ByteView, 2>{shares[0], shares[1]}, other.size(), rebuilt);
    CHECK(rebuilt == other);
  }
}

TEST_CASE("share lengths follow the short last chunk") {
  CHECK(share_length(1, 0) == 1);
  CHECK(share_length(1, 1) == 0);
  CHECK(share_length(1025, 0) == 1024);
  CHECK(share_length(1025, 1) == 1);
  CHECK(share_length(2049, 0) == 1025);
  CHECK(share_length(2049, 1) == 1024);
}

TEST_CASE("striping generalises to three servers") {
  const Bytes segment = pattern(3 * 1024 + 10);
  std::array<Bytes, 3> shares;
  stripe(segment, shares);
  CHECK(shares[0].size() == 1024 + 10);
  CHECK(shares[1].size() == 1024);
  CHECK(shares[2].size() == 1024);
  Bytes back(segment.size());
  const std::array<ByteView, 3> views{shares[0], shares[1], shares[2]};
  unstripe(views, back);
  CHECK(back == segment);
}
