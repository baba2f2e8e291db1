// The on-disk cache tier: round trips, the byte budget and its LRU order, entries adopted after a
// restart, sealed contents (no plaintext in the folder), and altered, swapped or truncated files
// rejected as misses.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <splitfs/errors.hpp>
#include <string>

#include "cache/disk_tier.hpp"
#include "tests/support/files.hpp"
#include "tests/support/temp_dir.hpp"

using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::cache::DiskTier;
using splitfs::testing::read_file;
using splitfs::testing::TempDir;
namespace fs = std::filesystem;

namespace {

splitfs::core::Key key_of(std::uint8_t seed) {
  splitfs::core::Key key{};
  key.fill(seed);
  return key;
}

Bytes bytes_of(const std::string& text) {
  return {text.begin(), text.end()};
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& item : fs::directory_iterator(dir))
    out.push_back(item.path());
  return out;
}

}  // namespace

TEST_CASE("disk tier: what is put comes back, sealed on disk") {
  TempDir folder("splitfs-disk-tier");
  DiskTier tier(folder / "cache", 1 << 20, key_of(1));
  CHECK_FALSE(tier.get("a"));
  REQUIRE(tier.put("a", bytes_of("the plain segment bytes")));
  const auto back = tier.get("a");
  REQUIRE(back);
  CHECK(*back == bytes_of("the plain segment bytes"));
  CHECK((fs::status(folder / "cache").permissions() & fs::perms::all) == fs::perms::owner_all);
  const auto files = files_in(folder / "cache");
  REQUIRE(files.size() == 1);
  CHECK(read_file(files[0]).find("plain segment") == std::string::npos);
  CHECK(files[0].filename().string().size() == 64);  // a keyed hash, not the key
  const auto stats = tier.stats();
  CHECK(stats.hits == 1);
  CHECK(stats.misses == 1);
  CHECK(stats.entries == 1);
  CHECK(stats.usage == fs::file_size(files[0]));
}

TEST_CASE("disk tier: usage stays within the budget, least recently used leave first") {
  TempDir folder("splitfs-disk-tier");
  const Bytes block(1000, 7);
  DiskTier tier(folder.path(), 3500, key_of(2));
  REQUIRE(tier.put("one", block));
  REQUIRE(tier.put("two", block));
  REQUIRE(tier.put("three", block));
  CHECK(tier.get("one"));  // now most recently used
  REQUIRE(tier.put("four", block));
  CHECK(tier.stats().usage <= 3500);
  CHECK(tier.stats().evictions == 1);
  CHECK_FALSE(tier.get("two"));
  CHECK(tier.get("one"));
  CHECK(tier.get("three"));
  CHECK(tier.get("four"));
  CHECK(files_in(folder.path()).size() == 3);
  CHECK_FALSE(tier.put("huge", Bytes(4000, 1)));  // larger than the whole budget
}

TEST_CASE("disk tier: a new process adopts the entries; another key reads none of them") {
  TempDir folder("splitfs-disk-tier");
  {
    DiskTier tier(folder.path(), 1 << 20, key_of(3));
    REQUIRE(tier.put("kept", bytes_of("survives a restart")));
  }
  std::ofstream(folder / "0123.tmp.99.1") << "a write a crash cut short";
  {
    DiskTier tier(folder.path(), 1 << 20, key_of(3));
    CHECK(tier.stats().entries == 1);
    const auto back = tier.get("kept");
    REQUIRE(back);
    CHECK(*back == bytes_of("survives a restart"));
  }
  CHECK_FALSE(fs::exists(folder / "0123.tmp.99.1"));
  DiskTier other(folder.path(), 1 << 20, key_of(4));
  CHECK_FALSE(other.get("kept"));
}

TEST_CASE("disk tier: altered, truncated or swapped files are misses and are deleted") {
  TempDir folder("splitfs-disk-tier");
  DiskTier tier(folder.path(), 1 << 20, key_of(5));
  REQUIRE(tier.put("x", bytes_of("content of x")));
  const fs::path x = files_in(folder.path()).at(0);
  REQUIRE(tier.put("y", bytes_of("content of y")));
  fs::path y;
  for (const auto& p : files_in(folder.path())) {
    if (p != x)
      y = p;
  }

  SECTION("a flipped byte") {
    std::string sealed = read_file(x);
    sealed[sealed.size() / 2] ^= 1;
    std::ofstream(x, std::ios::binary) << sealed;
  }
  SECTION("cut short") {
    fs::resize_file(x, fs::file_size(x) - 3);
  }
  SECTION("another entry's file under x's name") {
    fs::copy_file(y, x, fs::copy_options::overwrite_existing);
  }

  CHECK_FALSE(tier.get("x"));
  CHECK_FALSE(fs::exists(x));
  CHECK(tier.stats().rejected == 1);
  CHECK(tier.get("y"));
}

TEST_CASE("disk tier: a folder that cannot be created is a clear error") {
  TempDir folder("splitfs-disk-tier");
  std::ofstream(folder / "file") << "not a folder";
  CHECK_THROWS_AS(DiskTier(folder / "file" / "cache", 1 << 20, key_of(6)), splitfs::LocalIoError);
}
