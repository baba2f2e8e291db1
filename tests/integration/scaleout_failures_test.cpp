// What a client sees when a shared store's engines fail (docs/deployment.md, "Failure modes"):
// both servers reach Swift and PostgreSQL through fault proxies, which the test points at a dead
// port (every connection refused, open ones reset) and back. Requests fail with a server error
// within seconds, never hang (a listing says the server is unavailable rather than coming back
// empty); nothing stored before is lost; once the engine is back, the same servers work again
// without a restart.
#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <splitfs/client.hpp>
#include <splitfs/errors.hpp>
#include <string>

#include "tests/support/fault_proxy.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::FaultProxy;
using splitfs::testing::random_string;
using splitfs::testing::read_file;
using splitfs::testing::ServerProcess;
using splitfs::testing::TempDir;
using splitfs::testing::test_engines;
using splitfs::testing::write_file;

namespace {

constexpr auto kBound = std::chrono::seconds(15);

std::uint16_t port_of(const std::string& url) {
  // ...://host:PORT[/...]
  const auto colon = url.rfind(':');
  return static_cast<std::uint16_t>(std::stoul(url.substr(colon + 1)));
}

// A port nothing listens on.
constexpr std::uint16_t kDeadPort = 1;

}  // namespace

TEST_CASE("object store or index down: server errors within seconds, nothing lost, then recovery",
          "[scaleout][failures]") {
  const auto& engines = test_engines();
  const std::uint16_t swift_port = port_of(engines.s3_endpoint);
  const std::string pg_rest = engines.pg_url.substr(engines.pg_url.find('/', 14));  // "/splitfs"
  const std::uint16_t pg_port = port_of(engines.pg_url.substr(0, engines.pg_url.find('/', 14)));
  FaultProxy swift("127.0.0.1", swift_port, 1);
  FaultProxy pg("127.0.0.1", pg_port, 2);
  auto args = [&](const std::string& name) {
    return std::vector<std::string>{
        "--backend",
        "s3://" + name + "?endpoint=https://" + swift.address() + "&ca=" + engines.ca_file,
        "--index", "postgresql://splitfs@" + pg.address() + pg_rest + "?schema=" + name};
  };
  static std::mt19937_64 rng(std::random_device{}());
  const std::string tag = "f" + std::to_string(rng() % 1000000000000ULL);
  TempDir root("splitfs-scaleout-failures");
  ServerProcess https("splitfs-https-server", root / "https", args(tag + "h"));
  ServerProcess tcp("splitfs-tcp-server", root / "tcp", args(tag + "t"));
  const fs::path home = root / "client";
  splitfs::init(home, splitfs::testing::pinned_options(https, tcp));
  splitfs::Client client(home);
  const std::string first = random_string(2 * client.segment_bytes() + 5, 1);
  write_file(root / "first", first);
  client.store(root / "first", "first");

  auto fails_within_bound = [&](auto&& request) {
    const auto start = std::chrono::steady_clock::now();
    bool failed = false;
    try {
      request();
    } catch (const splitfs::ServerError&) {
      failed = true;
    }
    CHECK(failed);
    CHECK(std::chrono::steady_clock::now() - start < kBound);
  };
  const std::string second = random_string(client.segment_bytes() + 7, 2);
  write_file(root / "second", second);

  SECTION("the object store is down") {
    swift.set_target(kDeadPort);
    swift.cut_all();
    fails_within_bound([&] { client.store(root / "second", "second"); });
    fails_within_bound([&] { client.fetch("first", root / "out"); });
    CHECK_FALSE(fs::exists(root / "out"));
    // The index alone still answers.
    CHECK(client.list().size() == 1);
    swift.set_target(swift_port);
  }
  SECTION("the index is down") {
    pg.set_target(kDeadPort);
    pg.cut_all();
    fails_within_bound([&] { client.store(root / "second", "second"); });
    fails_within_bound([&] { client.fetch("first", root / "out"); });
    CHECK_FALSE(fs::exists(root / "out"));
    // A listing that cannot be read is the server being unavailable, not an empty store.
    const auto start = std::chrono::steady_clock::now();
    try {
      const auto listed = client.list();
      FAIL("a listing succeeded with the index down, with " << listed.size() << " files");
    } catch (const splitfs::ServerUnavailable& e) {
      CHECK(std::string(e.what()).find("storage is unavailable") != std::string::npos);
    }
    CHECK(std::chrono::steady_clock::now() - start < kBound);
    pg.set_target(pg_port);
  }
  // Back: the same servers serve everything, old and new.
  client.store(root / "second", "second");
  client.fetch("first", root / "out1");
  client.fetch("second", root / "out2");
  CHECK(read_file(root / "out1") == first);
  CHECK(read_file(root / "out2") == second);
}
