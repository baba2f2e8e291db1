// Shared by the reliability tests: both servers behind fault-injecting proxies, a client home that
// reaches them only through the proxies (with short timeouts, so faults cost seconds), a second
// home with the same key that reaches the servers directly (to ask what they hold), deterministic
// file contents, and the seed every random choice comes from.
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <splitfs/client.hpp>
#include <string>
#include <vector>

#include "core/config.hpp"
#include "tests/support/fault_proxy.hpp"
#include "tests/support/files.hpp"
#include "tests/support/servers.hpp"

namespace reliability {

namespace fs = std::filesystem;
using splitfs::testing::FaultPlan;
using splitfs::testing::FaultProxy;
using splitfs::testing::ProxyCounters;
using splitfs::testing::read_file;
using splitfs::testing::ServerProcess;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;
using splitfs::testing::write_file;
using Clock = std::chrono::steady_clock;

// Under AddressSanitizer (a build with SPLITFS_SANITIZE, servers included) freed memory is held in
// quarantine, so resident sizes say nothing about leaks; LeakSanitizer checks the servers at exit.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kResidentSizeMeaningful = false;
#else
inline constexpr bool kResidentSizeMeaningful = true;
#endif

// $SPLITFS_SEED if set (to replay a run), else a fresh one; printed either way.
inline std::uint64_t seed_for(const char* test) {
  std::uint64_t seed = 0;
  if (const char* text = std::getenv("SPLITFS_SEED"); text && *text) {
    seed = std::strtoull(text, nullptr, 0);
  } else {
    seed = (std::uint64_t{std::random_device{}()} << 32) | std::random_device{}();
  }
  std::printf("%s: seed %llu (replay with SPLITFS_SEED=%llu)\n", test,
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  std::fflush(stdout);
  return seed;
}

// Incompressible bytes, the same for the same seed.
inline std::string content(std::uint64_t seed, std::size_t size) {
  std::string out(size, '\0');
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
  for (std::size_t i = 0; i < size; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(out.data() + i, &x, std::min<std::size_t>(8, size - i));
  }
  return out;
}

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The part file an interrupted fetch to `target` leaves (core/client.cpp).
inline fs::path part_file(const fs::path& target) {
  return target.parent_path() / ("." + target.filename().string() + ".splitfs-part");
}

// Both servers, each behind its own proxy.
struct Proxied {
  static constexpr std::size_t kHttps = 0;
  static constexpr std::size_t kTcp = 1;

  Proxied(std::uint64_t seed, std::chrono::milliseconds connect, std::chrono::milliseconds idle,
          const std::vector<std::string>& server_args = {})
      : servers(server_args),
        https_proxy(servers.https.host(), servers.https.port(), seed),
        tcp_proxy(servers.tcp.host(), servers.tcp.port(), seed + 1) {
    splitfs::InitOptions options;
    options.https = https_proxy.address();
    options.tcp = tcp_proxy.address();
    options.https_fingerprint = servers.https.fingerprint();
    options.tcp_fingerprint = servers.tcp.fingerprint();
    splitfs::init(home, options);
    auto config = splitfs::core::load_config(home);
    config.timeouts.connect = connect;
    config.timeouts.idle = idle;
    splitfs::core::save_config(config);
    fs::create_directories(direct);
    fs::copy_file(home / "key", direct / "key");
    fs::permissions(direct / "key", fs::perms::owner_read | fs::perms::owner_write);
    point_direct_home();
  }

  splitfs::Client client() const { return splitfs::Client(home); }
  splitfs::Client direct_client() const { return splitfs::Client(direct); }
  FaultProxy& proxy(std::size_t j) { return j == kHttps ? https_proxy : tcp_proxy; }
  ServerProcess& server(std::size_t j) { return j == kHttps ? servers.https : servers.tcp; }

  void set_plan(const FaultPlan& plan) {
    https_proxy.set_plan(plan);
    tcp_proxy.set_plan(plan);
  }
  ProxyCounters traffic() const {
    const ProxyCounters a = https_proxy.counters();
    const ProxyCounters b = tcp_proxy.counters();
    return {a.up + b.up,     a.down + b.down,     a.connections + b.connections,
            a.cuts + b.cuts, a.stalls + b.stalls, a.delays + b.delays};
  }

  // Starts server j again after it stopped or was killed, on its port if still free.
  void start_again(std::size_t j) {
    server(j).restart();
    proxy(j).set_target(server(j).port());
    point_direct_home();
  }

  // Share bytes both servers hold for the test user, referenced or not, asked directly.
  std::uint64_t held() const {
    std::uint64_t total = 0;
    for (const auto& usage : direct_client().df())
      total += usage.stored_bytes + usage.garbage_bytes;
    return total;
  }

  TestServers servers;
  FaultProxy https_proxy;
  FaultProxy tcp_proxy;
  TempDir work{"splitfs-reliability"};
  fs::path home = work / "client";
  fs::path direct = work / "direct";

 private:
  void point_direct_home() {
    splitfs::InitOptions options = splitfs::testing::pinned_options(servers.https, servers.tcp);
    options.force = true;
    splitfs::init(direct, options);
  }
};

}  // namespace reliability
