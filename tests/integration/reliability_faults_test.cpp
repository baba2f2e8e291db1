// Stores and fetches through networks and servers that fail: a fault-injecting proxy in front of
// each server (cuts, stalls, delays at random bounded points, seeded), servers killed (SIGKILL) and
// stopped (SIGTERM) mid-store and mid-fetch, and servers that hang. Every operation either succeeds
// byte-identical or fails with ServerUnavailable; a failed fetch leaves nothing under the final
// name; a rerun succeeds and sends at most what the servers had not yet committed (counted at the
// proxies: the rerun's upload against the growth of what the servers hold), and a rerun fetch
// receives at most what the interrupted one had not yet written.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <functional>
#include <future>
#include <utility>

#include "tests/integration/reliability_fixture.hpp"

using namespace reliability;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMiB = 1u << 20;
// Protocol bytes a rerun may send besides share data: TLS records, requests, ids, manifests.
constexpr std::uint64_t kOverheadBytes = 256u << 10;
constexpr double kOverheadFraction = 0.02;

struct Figures {
  std::uint64_t operations = 0;
  std::uint64_t failures = 0;
  std::uint64_t reruns = 0;
  std::uint64_t rerun_sent = 0;    // uploaded by store reruns
  std::uint64_t rerun_needed = 0;  // what the servers had not held before those reruns
  std::uint64_t resent = 0;        // upper bound: rerun uploads beyond what was needed
  std::uint64_t fetch_rerun_received = 0;
  std::uint64_t fetch_rerun_missing = 0;  // bytes the interrupted fetches had not written
  std::uint64_t fetch_kept = 0;           // bytes kept from interrupted fetches
  std::uint64_t lost = 0;

  void print(const char* what, const ProxyCounters& traffic) const {
    std::printf(
        "%s: %llu operations, %llu faults injected (%llu cuts, %llu stalls, %llu delays), %llu "
        "failures (all ServerUnavailable), %llu reruns; store reruns sent %llu bytes for %llu "
        "bytes not yet held (resent at most %llu bytes, protocol included); fetch reruns received "
        "%llu bytes for %llu bytes missing (%llu bytes kept from interrupted fetches); bytes lost "
        "%llu\n",
        what, ull(operations), ull(traffic.faults()), ull(traffic.cuts), ull(traffic.stalls),
        ull(traffic.delays), ull(failures), ull(reruns), ull(rerun_sent), ull(rerun_needed),
        ull(resent), ull(fetch_rerun_received), ull(fetch_rerun_missing), ull(fetch_kept),
        ull(lost));
    std::fflush(stdout);
  }
  static unsigned long long ull(std::uint64_t v) { return static_cast<unsigned long long>(v); }
};

// Stores `path` as `name` once more on a clean network after a failure, and accounts for it.
void store_rerun(Proxied& p, Figures& figures, const fs::path& path, const std::string& name,
                 std::uint64_t size) {
  // The failed attempt's connections are gone for good: nothing they still buffer in the proxies
  // may reach a server (or the count) later.
  p.https_proxy.cut_all();
  p.tcp_proxy.cut_all();
  const std::uint64_t held_before = p.held();
  const ProxyCounters before = p.traffic();
  p.client().store(path, name);
  ++figures.operations;
  ++figures.reruns;
  const std::uint64_t sent = p.traffic().up - before.up;
  const std::uint64_t needed = p.held() - held_before;
  INFO("rerun of " << name << " (" << size << " bytes) sent " << sent << " bytes for " << needed
                   << " bytes not yet held");
  CHECK(sent <= needed + kOverheadBytes + static_cast<std::uint64_t>(kOverheadFraction * size));
  figures.rerun_sent += sent;
  figures.rerun_needed += needed;
  figures.resent += sent > needed ? sent - needed : 0;
}

// Fetches `name` to `target` once more on a clean network after a failure that left `kept` bytes
// in the part file, and accounts for it.
void fetch_rerun(Proxied& p, Figures& figures, const std::string& name, const fs::path& target,
                 const std::string& expected) {
  p.https_proxy.cut_all();
  p.tcp_proxy.cut_all();
  const std::uint64_t kept = fs::exists(part_file(target)) ? fs::file_size(part_file(target)) : 0;
  const ProxyCounters before = p.traffic();
  CHECK(p.client().fetch(name, target) == target);
  ++figures.operations;
  ++figures.reruns;
  const std::uint64_t received = p.traffic().down - before.down;
  const std::uint64_t missing = expected.size() - std::min<std::uint64_t>(kept, expected.size());
  INFO("fetch rerun of " << name << " kept " << kept << " bytes, received " << received);
  CHECK(received <= missing + kOverheadBytes + static_cast<std::uint64_t>(0.02 * missing));
  figures.fetch_rerun_received += received;
  figures.fetch_rerun_missing += missing;
  figures.fetch_kept += kept;
  const bool same = read_file(target) == expected;
  CHECK(same);
  if (!same)
    figures.lost += expected.size();
  CHECK_FALSE(fs::exists(part_file(target)));
}

// How one operation ended. Built without Catch2 (it may run on another thread); judged on the
// test's thread.
struct Outcome {
  bool ok = false;
  std::string unavailable;  // the ServerUnavailable message
  std::string unclear;      // any other failure
};

template <class Op>
Outcome run(Op&& op) {
  Outcome outcome;
  try {
    op();
    outcome.ok = true;
  } catch (const splitfs::ServerUnavailable& e) {
    outcome.unavailable = e.what();
  } catch (const std::exception& e) {
    outcome.unclear = e.what();
  }
  return outcome;
}

// Counts the operation; anything but success or ServerUnavailable (naming its server) fails the
// test with its message.
bool judge(Figures& figures, const Outcome& outcome) {
  ++figures.operations;
  if (!outcome.unclear.empty())
    FAIL("an operation failed with an unclear error: " << outcome.unclear);
  if (outcome.ok)
    return true;
  ++figures.failures;
  INFO("failed as expected: " << outcome.unavailable);
  CHECK(outcome.unavailable.find(" server at ") != std::string::npos);
  return false;
}

template <class Op>
bool attempt(Figures& figures, Op&& op) {
  return judge(figures, run(std::forward<Op>(op)));
}

// Waits until the proxy holds a connection still while `op` runs; an operation that ended
// before that fails the test with its outcome.
void require_stall(const FaultProxy& proxy, const ProxyCounters& since, std::future<Outcome>& op) {
  const auto deadline = Clock::now() + 60s;
  while (!proxy.wait_for_stall(since, 20ms)) {
    if (op.wait_for(0s) == std::future_status::ready) {
      const Outcome outcome = op.get();
      FAIL("the operation ended before the proxy held it: "
           << (outcome.ok ? "it succeeded" : outcome.unavailable + outcome.unclear));
    }
    REQUIRE(Clock::now() < deadline);
  }
}

// A plan that holds one connection still once it has moved `offset` bytes, for `hold`.
FaultPlan stall_at(std::uint64_t offset, std::chrono::milliseconds hold) {
  FaultPlan plan;
  plan.stall = 1.0;
  plan.min_offset = plan.max_offset = offset;
  plan.stall_for = hold;
  return plan;
}

}  // namespace

TEST_CASE("stores and fetches through proxies that cut, stall and delay connections",
          "[reliability][faults][long]") {
  const std::uint64_t seed = seed_for("faults");
  Proxied p(seed, 1000ms, 1500ms);
  std::mt19937_64 random(seed);
  Figures figures;
  fs::create_directories(p.work / "in");
  fs::create_directories(p.work / "out");

  std::vector<std::size_t> sizes{0,       1,        1023,     1025,         4096,
                                 100'000, kMiB + 3, 3 * kMiB, 8 * kMiB + 5, 16 * kMiB};
  for (int i = 0; i < 6; ++i)
    sizes.push_back(std::uniform_int_distribution<std::size_t>(0, 16 * kMiB)(random));
  std::shuffle(sizes.begin(), sizes.end(), random);

  auto random_plan = [&](std::size_t size) {
    FaultPlan plan;
    plan.cut = 0.3;
    plan.stall = 0.2;
    plan.delay = 0.2;
    plan.max_offset = size / 2 + std::size_t{64} * 1024;
    // A short stall only slows the transfer; a long one trips the client's idle timeout.
    plan.stall_for = std::uniform_int_distribution<int>(0, 1)(random) ? 400ms : 2500ms;
    plan.max_delay = 8ms;
    return plan;
  };

  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::size_t size = sizes[i];
    const std::string name = "file-" + std::to_string(i);
    const std::string data = content(seed + i, size);
    const fs::path path = p.work / "in" / name;
    write_file(path, data);
    INFO("file " << name << " of " << size << " bytes, seed " << seed);

    p.set_plan(random_plan(size));
    if (!attempt(figures, [&] { p.client().store(path, name); })) {
      p.set_plan({});
      store_rerun(p, figures, path, name, size);
    }

    const fs::path target = p.work / "out" / name;
    p.set_plan(random_plan(size));
    const bool fetched = attempt(figures, [&] { p.client().fetch(name, target); });
    p.set_plan({});
    if (fetched) {
      const bool same = read_file(target) == data;
      CHECK(same);
      if (!same)
        figures.lost += size;
    } else {
      CHECK_FALSE(fs::exists(target));
      fetch_rerun(p, figures, name, target, data);
    }
    fs::remove(target);
  }

  // Everything once more, straight from the servers.
  auto direct = p.direct_client();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::string name = "file-" + std::to_string(i);
    const fs::path target = direct.fetch(name, p.work / "out");
    const bool same = read_file(target) == content(seed + i, sizes[i]);
    CHECK(same);
    if (!same)
      figures.lost += sizes[i];
  }
  const ProxyCounters traffic = p.traffic();
  figures.print("faults", traffic);
  CHECK(traffic.faults() >= sizes.size() / 2);
  CHECK(figures.lost == 0);
  for (auto* server : {&p.servers.https, &p.servers.tcp}) {
    const auto check = server->command({"check"});
    INFO(check.output);
    CHECK(check.status == 0);
  }
}

TEST_CASE("each server killed mid-store and mid-fetch: reruns finish and send only what is missing",
          "[reliability][faults]") {
  const std::uint64_t seed = seed_for("kill");
  Proxied p(seed, 1000ms, 5000ms);
  Figures figures;
  constexpr std::size_t kSize = 32 * kMiB;
  fs::create_directories(p.work / "out");

  for (const std::size_t j : {Proxied::kHttps, Proxied::kTcp}) {
    // Content of its own each round: what the servers hold already is never sent again.
    const std::string name = "big-" + std::to_string(j);
    const std::string data = content(seed + j, kSize);
    const fs::path path = p.work / name;
    write_file(path, data);
    INFO("server " << (j == Proxied::kHttps ? "HTTPS" : "TCP") << ", seed " << seed);

    // Mid-store: the proxy holds the upload still a quarter of the way in, and the server dies.
    p.proxy(j).set_plan(stall_at(kSize / 8, 1500ms));
    ProxyCounters start = p.proxy(j).counters();
    auto store =
        std::async(std::launch::async, [&] { return run([&] { p.client().store(path, name); }); });
    require_stall(p.proxy(j), start, store);
    p.server(j).kill(SIGKILL);
    CHECK_FALSE(judge(figures, store.get()));
    p.proxy(j).set_plan({});
    p.start_again(j);
    store_rerun(p, figures, path, name, kSize);

    // Mid-fetch: held still five eighths of the way in (the first batches are written), killed.
    const fs::path target = p.work / "out" / name;
    p.proxy(j).set_plan(stall_at(kSize / 2 * 5 / 8, 1500ms));
    start = p.proxy(j).counters();
    auto fetch = std::async(std::launch::async,
                            [&] { return run([&] { p.client().fetch(name, target); }); });
    require_stall(p.proxy(j), start, fetch);
    p.server(j).kill(SIGKILL);
    // What the dead server had already written may still sit in the proxy and the socket
    // buffers, enough to finish a large batch: its machine is gone too, so is that.
    p.proxy(j).cut_all();
    CHECK_FALSE(judge(figures, fetch.get()));
    p.proxy(j).set_plan({});
    CHECK_FALSE(fs::exists(target));
    CHECK(fs::exists(part_file(target)));
    p.start_again(j);
    fetch_rerun(p, figures, name, target, data);
    fs::remove(target);
  }
  figures.print("kill", p.traffic());
  CHECK(figures.fetch_kept > 0);
  CHECK(figures.lost == 0);
}

TEST_CASE("SIGTERM mid-store: the server exits 0 with a consistent store, and a rerun finishes",
          "[reliability][faults]") {
  const std::uint64_t seed = seed_for("sigterm");
  Proxied p(seed, 1000ms, 5000ms);
  Figures figures;
  constexpr std::size_t kSize = 24 * kMiB;

  for (const std::size_t j : {Proxied::kHttps, Proxied::kTcp}) {
    // Content of its own each round: what the servers hold already is never sent again.
    const std::string name = "big-" + std::to_string(j);
    const std::string data = content(seed + j, kSize);
    const fs::path path = p.work / name;
    write_file(path, data);
    INFO("server " << (j == Proxied::kHttps ? "HTTPS" : "TCP"));
    // The signal comes while a request is in flight (held still by the proxy for a moment).
    p.proxy(j).set_plan(stall_at(kSize / 8, 1000ms));
    const ProxyCounters start = p.proxy(j).counters();
    auto store =
        std::async(std::launch::async, [&] { return run([&] { p.client().store(path, name); }); });
    require_stall(p.proxy(j), start, store);
    const auto stopping = Clock::now();
    CHECK(p.server(j).stop() == 0);
    CHECK(seconds_since(stopping) < 8.0);
    const bool stored = judge(figures, store.get());
    p.proxy(j).set_plan({});
    const auto check = p.server(j).command({"check"});
    INFO(check.output);
    CHECK(check.status == 0);
    p.start_again(j);
    if (!stored)
      store_rerun(p, figures, path, name, kSize);
    const fs::path target = p.client().fetch(name, p.work / "out.bin");
    CHECK(read_file(target) == data);
    fs::remove(target);
  }
  figures.print("sigterm", p.traffic());
}

TEST_CASE("a server that hangs costs a bounded wait, never a hung call", "[reliability][faults]") {
  const std::uint64_t seed = seed_for("hang");
  Proxied p(seed, 1000ms, 1500ms);
  const std::string data = content(seed, 8 * kMiB);
  write_file(p.work / "file.bin", data);
  fs::create_directories(p.work / "out");
  p.client().store(p.work / "file.bin", "file.bin");

  for (const std::size_t j : {Proxied::kHttps, Proxied::kTcp}) {
    const std::string kind = j == Proxied::kHttps ? "HTTPS" : "TCP";
    INFO(kind);
    // Connections are accepted but the TLS handshake never completes: the connect deadline.
    p.proxy(j).freeze(true);
    auto start = Clock::now();
    try {
      p.client().fetch("file.bin", p.work / "out");
      FAIL("a fetch succeeded through a frozen proxy");
    } catch (const splitfs::ServerUnavailable& e) {
      INFO(e.what());
      CHECK(e.server() == kind);
    }
    CHECK(seconds_since(start) < 4.0);
    p.proxy(j).freeze(false);

    // Held still in the middle of a transfer: the idle deadline.
    p.proxy(j).set_plan(stall_at(1 * kMiB, 10s));
    start = Clock::now();
    try {
      p.client().fetch("file.bin", p.work / "out");
      FAIL("a fetch succeeded through a stalled connection");
    } catch (const splitfs::ServerUnavailable& e) {
      INFO(e.what());
      CHECK(e.server() == kind);
      CHECK(std::string(e.what()).find("stopped responding") != std::string::npos);
    }
    CHECK(seconds_since(start) < 5.0);
    CHECK_FALSE(fs::exists(p.work / "out" / "file.bin"));
    p.proxy(j).set_plan({});
    p.proxy(j).cut_all();

    // Killed outright: refused at once.
    p.server(j).kill(SIGKILL);
    start = Clock::now();
    CHECK_THROWS_AS(p.client().fetch("file.bin", p.work / "out"), splitfs::ServerUnavailable);
    CHECK(seconds_since(start) < 4.0);
    p.start_again(j);
    const fs::path target = p.client().fetch("file.bin", p.work / "out");
    CHECK(read_file(target) == data);
    fs::remove(target);
  }
}

TEST_CASE("a store and a fetch ended by Ctrl-C go on from where they stopped when run again",
          "[reliability][faults]") {
  const std::uint64_t seed = seed_for("interrupt");
  Proxied p(seed, 1000ms, 5000ms);
  Figures figures;
  constexpr std::size_t kSize = 32 * kMiB;
  const std::string data = content(seed, kSize);
  const fs::path path = p.work / "big.bin";
  write_file(path, data);
  const fs::path target = p.work / "out.bin";

  // Runs `op` in a child process, which the test interrupts (SIGINT, as Ctrl-C does) while the
  // TCP server's proxy holds its transfer still `offset` bytes in.
  auto interrupted = [&](std::uint64_t offset, const std::function<void()>& op) {
    p.proxy(Proxied::kTcp).set_plan(stall_at(offset, 5s));
    const ProxyCounters start = p.proxy(Proxied::kTcp).counters();
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      std::signal(SIGINT, SIG_DFL);  // the test framework's handler must not outlive the fork
      try {
        op();
      } catch (...) {
        ::_exit(1);
      }
      ::_exit(0);
    }
    const bool held = p.proxy(Proxied::kTcp).wait_for_stall(start, 60s);
    ::kill(child, SIGINT);
    int status = 0;
    ::waitpid(child, &status, 0);
    p.proxy(Proxied::kTcp).set_plan({});
    p.proxy(Proxied::kTcp).cut_all();
    REQUIRE(held);
    CHECK(WIFSIGNALED(status));
    ++figures.operations;
    ++figures.failures;
  };

  interrupted(kSize / 4, [&] { p.client().store(path, "big.bin"); });
  store_rerun(p, figures, path, "big.bin", kSize);

  interrupted(kSize / 2 * 5 / 8, [&] { p.client().fetch("big.bin", target); });
  CHECK_FALSE(fs::exists(target));
  REQUIRE(fs::exists(part_file(target)));
  CHECK(fs::file_size(part_file(target)) > 0);
  fetch_rerun(p, figures, "big.bin", target, data);
  figures.print("interrupt", p.traffic());
  CHECK(figures.lost == 0);
}
