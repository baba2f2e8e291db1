// A store that runs out of space: past its capacity new shares are refused with no_space, what it
// held stays readable and committable, and after removals and a compaction it accepts data again.
// The reserve file is taken at open and given back when the store finds the disk full. (A real
// full filesystem is exercised by the integration tests, on a small tmpfs.)
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "store/store.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::Bytes;
using splitfs::Id;
using namespace splitfs::store;
using splitfs::testing::TempDir;

namespace {

Id id_of(std::uint32_t n) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>((n >> (8 * (i % 4))) + i * 31);
  return id;
}

Bytes data_of(std::uint32_t n, std::size_t size) {
  Bytes data(size);
  std::uint32_t x = n * 2654435761u + 1;
  for (auto& b : data) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::uint8_t>(x);
  }
  return data;
}

std::error_code put(Store& store, std::uint32_t n, std::size_t size) {
  const Bytes data = data_of(n, size);
  const ShareInput input{id_of(n), data};
  return store.put_shares("u", std::span<const ShareInput>(&input, 1));
}

std::error_code commit_file(Store& store, std::uint32_t file, std::uint64_t version,
                            const std::vector<std::uint32_t>& shares) {
  std::vector<ShareRef> refs;
  refs.reserve(shares.size());
  for (const auto n : shares)
    refs.push_back({id_of(n), 1});
  const Bytes entry{1, 2, 3};
  std::vector<Id> missing;
  return store.commit("u", id_of(1000000 + file), version, refs, entry, entry, missing);
}

}  // namespace

TEST_CASE(
    "a store at its capacity refuses new shares, keeps the old, and recovers after compaction",
    "[store][space]") {
  TempDir dir("splitfs-space");
  Options options;
  options.capacity_bytes = 4u << 20;
  options.garbage_grace = std::chrono::seconds(0);
  auto store = Store::open(dir.path() / "store", options);

  constexpr std::size_t kShare = 256u << 10;
  std::uint32_t stored = 0;
  std::error_code ec;
  while (!(ec = put(*store, stored, kShare)))
    ++stored;
  CHECK(ec == Errc::no_space);
  CHECK(stored >= 8);   // most of the 4 MiB was usable
  CHECK(stored <= 16);  // and no more than it
  std::vector<std::uint32_t> kept;
  for (std::uint32_t n = 0; n < stored; ++n)
    kept.push_back(n);
  // Commits are not shares: they still go through, and every share is intact.
  REQUIRE_FALSE(commit_file(*store, 1, 1, {kept.begin(), kept.begin() + 2}));
  REQUIRE_FALSE(commit_file(*store, 2, 1, {kept.begin() + 2, kept.end()}));
  for (const auto n : kept) {
    Bytes out;
    REQUIRE_FALSE(store->get_share("u", id_of(n), out));
    CHECK(out == data_of(n, kShare));
  }
  CHECK(put(*store, 999, kShare) == Errc::no_space);
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());

  // Removing the big file and compacting gives the space back.
  REQUIRE_FALSE(store->remove_file("u", id_of(1000000 + 2)));
  CompactionReport compaction;
  REQUIRE_FALSE(store->compact({std::chrono::seconds(0), "test", nullptr}, compaction));
  CHECK(compaction.garbage_shares == stored - 2);
  REQUIRE_FALSE(put(*store, 999, kShare));
  for (const auto n : {kept[0], kept[1]}) {
    Bytes out;
    REQUIRE_FALSE(store->get_share("u", id_of(n), out));
    CHECK(out == data_of(n, kShare));
  }
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());
}

TEST_CASE("the reserve file is taken when the store opens", "[store][space]") {
  TempDir dir("splitfs-space");
  Options options;
  options.reserve_file = dir.path() / "RESERVE";
  options.reserve_bytes = 1u << 20;
  {
    auto store = Store::open(dir.path() / "store", options);
    struct stat st {};
    REQUIRE(::stat(options.reserve_file.c_str(), &st) == 0);
    CHECK(static_cast<std::uint64_t>(st.st_blocks) * 512 >= options.reserve_bytes);
    REQUIRE_FALSE(put(*store, 1, 1000));
  }
  // Gone (an earlier run gave it back): taken again at the next open.
  fs::remove(options.reserve_file);
  auto store = Store::open(dir.path() / "store", options);
  CHECK(fs::exists(options.reserve_file));
  REQUIRE_FALSE(put(*store, 2, 1000));
}
