// Two writers racing on one object key against real servers. A commit goes to both servers at
// once and the HTTPS server arbitrates, so a loser can reach the TCP server first (a split); the
// winner then settles it by committing above both. Round after round: exactly one writer wins,
// the loser gets ConflictError, a reader then sees the winner's version and bytes, and a reader
// running all along only ever sees one writer's whole content, never shares of both.
#include <atomic>
#include <barrier>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <splitfs/client.hpp>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;

namespace {

constexpr std::size_t kObjectBytes = 4096;

// Writer w's content of round r: two bytes of the round, then one fill byte throughout, so a
// read that mixed the servers' shares of two writers shows as two fills (each server holds every
// other 1 KiB chunk).
std::vector<std::uint8_t> content(int round, int writer) {
  std::vector<std::uint8_t> data(kObjectBytes, static_cast<std::uint8_t>(round * 2 + writer));
  data[0] = static_cast<std::uint8_t>(round);
  data[1] = static_cast<std::uint8_t>(round >> 8);
  return data;
}

// True if data is some writer's whole content of some round.
bool whole(const std::vector<std::uint8_t>& data) {
  if (data.size() != kObjectBytes)
    return false;
  const int round = data[0] | data[1] << 8;
  const std::uint8_t fill = data[2];
  for (std::size_t i = 2; i < data.size(); ++i) {
    if (data[i] != fill)
      return false;
  }
  const auto first = static_cast<std::uint8_t>(round * 2);
  return fill == first || fill == static_cast<std::uint8_t>(first + 1);
}

}  // namespace

TEST_CASE("two writers racing on one key: one winner per round, readers never see a mix",
          "[objects][race]") {
  TestServers servers;
  TempDir work{"splitfs-race"};
  const fs::path home = work / "a";
  splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp));
  // The same keys and identity in homes of their own, as on three machines: each keeps its own
  // record of the versions it has seen.
  for (const char* other : {"b", "reader", "watcher"})
    fs::copy(home, work / other, fs::copy_options::recursive);
  splitfs::Client a(home);
  splitfs::Client b(work / "b");
  splitfs::Client reader(work / "reader");
  splitfs::Client* writers[2] = {&a, &b};
  const std::string key = "race/key";
  const splitfs::ObjectAttributes attributes{kObjectBytes, 0, 0644, 0};

  std::atomic<bool> done{false};
  std::atomic<int> seen{0};
  std::atomic<int> mixed{0};
  std::atomic<int> watcher_errors{0};
  std::thread watcher([&] {
    splitfs::Client client(work / "watcher");
    while (!done) {
      try {
        const splitfs::StoredObject object = client.open_object(key);
        const auto data = client.read_segments(object.segments);
        ++seen;
        if (data.size() != 1 || !whole(data[0]))
          ++mixed;
      } catch (const splitfs::NotFound&) {
        // Before the first commit.
      } catch (const std::exception&) {
        ++watcher_errors;
      }
    }
  });

  constexpr int kRounds = 150;
  std::uint64_t expected = 0;
  int splits = 0;
  std::vector<std::string> problems;
  for (int round = 0; round < kRounds && problems.empty(); ++round) {
    std::vector<splitfs::SegmentRef> refs[2];
    std::optional<splitfs::StoredObject> won[2];
    std::string failure[2];
    std::barrier start(2);
    std::vector<std::thread> threads;
    threads.reserve(2);
    for (int w = 0; w < 2; ++w) {
      threads.emplace_back([&, w] {
        try {
          const auto data = content(round, w);
          const std::span<const std::uint8_t> segment(data);
          refs[w] = writers[w]->stage_segments(std::span(&segment, 1));
          start.arrive_and_wait();
          won[w] = writers[w]->commit_object(key, expected, attributes, refs[w]);
        } catch (const splitfs::ConflictError&) {
          failure[w] = "conflict";
        } catch (const std::exception& e) {
          failure[w] = e.what();
        }
      });
    }
    for (auto& thread : threads)
      thread.join();
    const std::string where = "round " + std::to_string(round) + ": ";
    if (won[0].has_value() == won[1].has_value()) {
      problems.push_back(
          where + (won[0] ? "two winners" : "no winner: " + failure[0] + " | " + failure[1]));
      break;
    }
    const int w = won[0] ? 0 : 1;
    if (failure[1 - w] != "conflict")
      problems.push_back(where + "the loser failed otherwise: " + failure[1 - w]);
    if (won[w]->version <= expected)
      problems.push_back(where + "the winner's version did not rise");
    if (won[w]->version != expected + 1)
      ++splits;
    try {
      const splitfs::StoredObject object = reader.open_object(key);
      if (object.version != won[w]->version || object.segments != refs[w])
        problems.push_back(where + "the reader sees version " + std::to_string(object.version) +
                           ", not the winner's " + std::to_string(won[w]->version));
      const auto data = reader.read_segments(object.segments);
      if (data.size() != 1 || data[0] != content(round, w))
        problems.push_back(where + "the reader reads other bytes than the winner's");
    } catch (const std::exception& e) {
      problems.push_back(where + "the reader failed: " + e.what());
    }
    expected = won[w]->version;
  }
  done = true;
  watcher.join();
  INFO("splits settled: " << splits);
  CHECK(problems == std::vector<std::string>{});
  CHECK(seen > 0);
  CHECK(mixed == 0);
  CHECK(watcher_errors == 0);
}
