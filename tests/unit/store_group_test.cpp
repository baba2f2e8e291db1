// Group commit in the local store: writes of many threads at once share index transactions and
// syncs, and each still gets exactly its own outcome.
#include <unistd.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <barrier>
#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "store/store.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::Id;
using namespace splitfs::store;
using splitfs::testing::TempDir;

namespace {

Id make_id(std::uint64_t seed) {
  Id id{};
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& b : id) {
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    b = static_cast<std::uint8_t>(x >> 56);
  }
  return id;
}

Bytes make_data(std::uint64_t seed, std::size_t size) {
  Bytes data(size);
  for (std::size_t i = 0; i < size; ++i)
    data[i] = static_cast<std::uint8_t>((seed * 131 + i * 7) >> 3);
  return data;
}

Bytes text(const std::string& s) {
  return {s.begin(), s.end()};
}

constexpr int kThreads = 8;

// Stores one share for user "u" and returns its id.
Id hold_one_share(Store& store) {
  const Id held = make_id(1);
  const Bytes data = make_data(1, 1000);
  const ShareInput input{held, data};
  REQUIRE_FALSE(store.put_shares("u", std::span(&input, 1)));
  return held;
}

}  // namespace

TEST_CASE("concurrent puts and commits each land with their own content") {
  TempDir dir("splitfs-group");
  Options options;
  options.pack_target_bytes = 16u << 10;  // packs roll over inside groups too
  constexpr int kPerThread = 40;
  {
    auto store = Store::open(dir / "store", options);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          const std::uint64_t seed = static_cast<std::uint64_t>(t) * 1000 + i;
          const Id share = make_id(seed);
          const Bytes data = make_data(seed, 2048 + static_cast<std::size_t>(i));
          const ShareInput input{share, data};
          if (store->put_shares("u", std::span(&input, 1)))
            ++failures;
          const ShareRef ref{share, 2};
          const Bytes entry = text("entry " + std::to_string(seed));
          const Bytes manifest = text("manifest " + std::to_string(seed));
          std::vector<Id> missing;
          if (store->commit("u", make_id(seed + 1'000'000), 1, std::span(&ref, 1), entry, manifest,
                            missing))
            ++failures;
        }
      });
    }
    for (auto& thread : threads)
      thread.join();
    REQUIRE(failures == 0);
  }
  // Everything is there after the store was closed and opened again.
  auto store = Store::open(dir / "store", options);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) {
      const std::uint64_t seed = static_cast<std::uint64_t>(t) * 1000 + i;
      FileRecord record;
      REQUIRE_FALSE(store->get_file("u", make_id(seed + 1'000'000), record));
      CHECK(record.version == 1);
      CHECK(record.entry == text("entry " + std::to_string(seed)));
      CHECK(record.manifest == text("manifest " + std::to_string(seed)));
      Bytes blob;
      REQUIRE_FALSE(store->get_share("u", make_id(seed), blob));
      CHECK(blob == make_data(seed, 2048 + static_cast<std::size_t>(i)));
    }
  }
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());
  CHECK(report.files == std::uint64_t{kThreads} * kPerThread);
}

TEST_CASE("a write that fails in a group takes back only its own changes") {
  TempDir dir("splitfs-group");
  auto store = Store::open(dir / "store");
  const Id held = hold_one_share(*store);
  constexpr int kRounds = 30;
  std::barrier start(kThreads);
  std::vector<std::vector<std::error_code>> outcomes(kThreads);
  std::vector<std::vector<std::vector<Id>>> reported(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        start.arrive_and_wait();
        // Odd threads reference a share nobody holds, besides the held one.
        const Id absent = make_id(500 + static_cast<std::uint64_t>(t) * 100 + r);
        std::vector<ShareRef> refs{{held, 1}};
        if (t % 2 == 1)
          refs.push_back({absent, 1});
        std::vector<Id> missing;
        const Id file = make_id(100'000 + static_cast<std::uint64_t>(t) * 100 + r);
        outcomes[t].push_back(store->commit("u", file, 1, refs, text("e"), text("m"), missing));
        reported[t].push_back(missing);
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  for (int t = 0; t < kThreads; ++t) {
    for (int r = 0; r < kRounds; ++r) {
      const Id file = make_id(100'000 + static_cast<std::uint64_t>(t) * 100 + r);
      FileRecord record;
      const std::error_code found = store->get_file("u", file, record);
      if (t % 2 == 1) {
        CHECK(outcomes[t][r] == Errc::missing_shares);
        CHECK(reported[t][r] ==
              std::vector<Id>{make_id(500 + static_cast<std::uint64_t>(t) * 100 + r)});
        CHECK(found == Errc::not_found);
      } else {
        CHECK_FALSE(outcomes[t][r]);
        CHECK_FALSE(found);
      }
    }
  }
  // The held share's count is exactly the successful commits' references.
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());
  FileInfo info;
  REQUIRE_FALSE(store->file_info("u", make_id(100'000), info));
  CHECK(info.version == 1);
}

TEST_CASE("of writers racing for one version exactly one wins, round after round") {
  TempDir dir("splitfs-group");
  auto store = Store::open(dir / "store");
  const Id share = make_id(7);
  const Bytes data = make_data(7, 512);
  const ShareInput input{share, data};
  REQUIRE_FALSE(store->put_shares("u", std::span(&input, 1)));
  const Id file = make_id(8);
  constexpr int kRounds = 40;
  std::barrier start(kThreads);
  std::vector<std::vector<int>> won(kRounds, std::vector<int>(kThreads, 0));
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        start.arrive_and_wait();
        const ShareRef ref{share, 1};
        std::vector<Id> missing;
        const std::error_code ec =
            store->commit("u", file, static_cast<std::uint64_t>(r) + 1, std::span(&ref, 1),
                          text("writer " + std::to_string(t)), text("m"), missing);
        // Catch's assertions are not for other threads: outcomes are checked after the join.
        won[r][t] = !ec ? 1 : ec == Errc::conflict ? 0 : -1;
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  int last_winner = -1;
  for (int r = 0; r < kRounds; ++r) {
    int winners = 0;
    for (int t = 0; t < kThreads; ++t) {
      CHECK(won[r][t] >= 0);
      winners += won[r][t] == 1 ? 1 : 0;
      if (won[r][t] == 1)
        last_winner = t;
    }
    CHECK(winners == 1);
  }
  FileRecord record;
  REQUIRE_FALSE(store->get_file("u", file, record));
  CHECK(record.version == kRounds);
  CHECK(record.entry == text("writer " + std::to_string(last_winner)));
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());
}

TEST_CASE("a commit batch gives each commit its own outcome, as if it came alone") {
  TempDir dir("splitfs-group");
  auto store = Store::open(dir / "store");
  const Id held = hold_one_share(*store);
  std::vector<Id> missing;
  const ShareRef held_ref{held, 1};
  REQUIRE_FALSE(
      store->commit("u", make_id(10), 5, std::span(&held_ref, 1), text("e5"), text("m5"), missing));

  // 100 commits (more than one write group takes): a new file, then every tenth one at a version
  // not newer than the stored one, every seventh referencing a share nobody holds.
  constexpr std::size_t kCommits = 100;
  const std::vector<ShareRef> with_absent{held_ref, {make_id(2), 1}};
  std::vector<Bytes> entries;
  for (std::size_t i = 0; i < kCommits; ++i)
    entries.push_back(text("entry " + std::to_string(i)));
  std::vector<CommitInput> commits;
  for (std::size_t i = 0; i < kCommits; ++i) {
    CommitInput c{make_id(100 + i), 1, std::span(&held_ref, 1), entries[i], text("m")};
    if (i % 10 == 0)
      c.file = make_id(10);  // holds version 5
    else if (i % 7 == 0)
      c.refs = with_absent;
    commits.push_back(c);
  }
  const Bytes manifest = text("m");
  for (auto& c : commits)
    c.manifest = manifest;
  std::vector<std::error_code> results(kCommits);
  store->commit_batch("u", commits, 0, results);

  for (std::size_t i = 0; i < kCommits; ++i) {
    INFO("commit " << i);
    FileRecord record;
    if (i % 10 == 0) {
      CHECK(results[i] == Errc::conflict);
    } else if (i % 7 == 0) {
      CHECK(results[i] == Errc::missing_shares);
      CHECK(store->get_file("u", make_id(100 + i), record) == Errc::not_found);
    } else {
      REQUIRE_FALSE(results[i]);
      REQUIRE_FALSE(store->get_file("u", make_id(100 + i), record));
      CHECK(record.version == 1);
      CHECK(record.entry == entries[i]);
    }
  }
  FileRecord first;
  REQUIRE_FALSE(store->get_file("u", make_id(10), first));
  CHECK(first.version == 5);
  CHECK(first.entry == text("e5"));
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.ok());
}
