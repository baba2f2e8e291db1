// Reference counts under concurrency: several clients store files whose segments overlap, replace
// and delete them, while the servers compact in the background with a short grace period. At the
// end both servers' `check` must agree that every refcount equals the references, every file must
// read back, and deleting everything and compacting must leave no share behind.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <splitfs/client.hpp>
#include <thread>

#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::random_string;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;

namespace {

constexpr int kClients = 4;
constexpr int kNamesPerClient = 6;
constexpr auto kDuration = std::chrono::seconds(4);

}  // namespace

TEST_CASE("refcounts stay right under concurrent overlapping stores, deletes and compactions",
          "[storage][refcount]") {
  TestServers servers({"--compact-interval", "1", "--garbage-grace", "3"});
  TempDir work("splitfs-refcount");
  const fs::path home = work / "client";
  splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp));
  const std::size_t segment = splitfs::Client(home).segment_bytes();

  // Segment-sized blocks the files are made of, so files share whole segments.
  std::vector<std::string> blocks;
  blocks.reserve(12);
  for (int b = 0; b < 12; ++b)
    blocks.push_back(random_string(segment, 100 + static_cast<std::uint64_t>(b)));

  std::mutex mutex;
  std::map<std::string, std::string> expected;  // name -> content, for names that exist
  std::atomic<int> failures{0};
  std::atomic<int> stores{0};
  std::atomic<int> removes{0};
  std::vector<splitfs::Client> clients;
  clients.reserve(kClients);
  for (int c = 0; c < kClients; ++c)
    clients.emplace_back(home);
  const auto until = std::chrono::steady_clock::now() + kDuration;
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(c) * 7919 + 1);
      splitfs::Client& client = clients[static_cast<std::size_t>(c)];
      const fs::path input = work / ("input" + std::to_string(c));
      while (std::chrono::steady_clock::now() < until) {
        const std::string name = "c" + std::to_string(c) + "-" +
                                 std::to_string(rng() % static_cast<unsigned>(kNamesPerClient));
        try {
          if (rng() % 4 == 0) {
            bool exists;
            {
              std::lock_guard lock(mutex);
              exists = expected.count(name) > 0;
            }
            if (!exists)
              continue;
            client.remove(name);
            std::lock_guard lock(mutex);
            expected.erase(name);
            ++removes;
            continue;
          }
          std::string data;
          const std::size_t segments = 1 + rng() % 6;
          for (std::size_t s = 0; s < segments; ++s)
            data += blocks[rng() % blocks.size()];
          data.resize(data.size() - rng() % segment);  // a short last segment now and then
          std::ofstream(input, std::ios::binary | std::ios::trunc)
              .write(data.data(), static_cast<std::streamsize>(data.size()));
          client.store(input, name);
          std::lock_guard lock(mutex);
          expected[name] = data;
          ++stores;
        } catch (const splitfs::Error& e) {
          std::lock_guard lock(mutex);
          UNSCOPED_INFO(name << ": " << e.what());
          ++failures;
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  CHECK(failures == 0);
  CHECK(stores > 20);
  CHECK(removes > 0);

  for (auto* server : {&servers.https, &servers.tcp}) {
    const auto result = server->command({"check"});
    INFO(result.output);
    CHECK(result.status == 0);
    CHECK(result.output.find("consistent") != std::string::npos);
  }
  splitfs::Client client(home);
  for (const auto& [name, data] : expected) {
    INFO(name);
    const auto back = client.read(name, 0, data.size());
    CHECK(std::string(back.begin(), back.end()) == data);
  }
  // Twelve distinct blocks make every file: deduplication holds their shares once each, plus at
  // most one short last segment per file.
  const auto usage = client.df();
  for (const auto& u : usage) {
    CHECK(u.unique_logical_bytes <= (12 + expected.size()) * segment / 2);
    CHECK(u.dedup_ratio() > 1.0);
  }

  for (const auto& [name, data] : expected)
    client.remove(name);
  for (auto* server : {&servers.https, &servers.tcp}) {
    REQUIRE(server->command({"compact", "--grace", "0"}).status == 0);
    const auto result = server->command({"check"});
    INFO(result.output);
    CHECK(result.status == 0);
    CHECK(result.output.find("shares                0\n") != std::string::npos);
  }
}
