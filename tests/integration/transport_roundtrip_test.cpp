// Both transports against the real server processes: every request kind round-trips, error replies
// arrive intact, a wrong pin is refused naming both fingerprints, a stopped or frozen server fails
// fast, a restarted server is reconnected transparently, and a reply close to the batch bound
// works.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <splitfs/errors.hpp>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "protocol/messages.hpp"
#include "tests/support/servers.hpp"
#include "transport/transport.hpp"

namespace {

using namespace splitfs;
using namespace std::chrono_literals;
using splitfs::testing::ServerProcess;
using splitfs::testing::TempDir;
using Clock = std::chrono::steady_clock;

std::string binary_for(const std::string& kind) {
  return kind == "HTTPS" ? "splitfs-https-server" : "splitfs-tcp-server";
}

transport::Endpoint endpoint_of(const std::string& kind, const ServerProcess& server) {
  return {kind, server.host(), server.port(), server.fingerprint()};
}

std::unique_ptr<transport::Transport> connect(const transport::Endpoint& endpoint,
                                              const transport::Timeouts& timeouts = {}) {
  return endpoint.kind == "HTTPS" ? transport::make_https_transport(endpoint, timeouts)
                                  : transport::make_tcp_transport(endpoint, timeouts);
}

class Random {
 public:
  Random() : engine_(std::random_device{}()) {}

  Id id() {
    Id out{};
    fill(out.data(), out.size());
    return out;
  }
  Bytes bytes(std::size_t size) {
    Bytes out(size);
    fill(out.data(), out.size());
    return out;
  }

 private:
  void fill(std::uint8_t* data, std::size_t size) {
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
      const std::uint64_t word = engine_();
      std::copy_n(reinterpret_cast<const std::uint8_t*>(&word), 8, data + i);
    }
    for (; i < size; ++i) {
      data[i] = static_cast<std::uint8_t>(engine_());
    }
  }

  std::mt19937_64 engine_;
};

// The reply as T; an ErrorReply fails the test with the server's message.
template <typename T>
T expect(const protocol::Reply& reply) {
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    FAIL("server answered status " << static_cast<int>(error->status) << ": " << error->message);
  }
  REQUIRE(std::holds_alternative<T>(reply));
  return std::get<T>(reply);
}

protocol::ErrorReply expect_error(const protocol::Reply& reply, protocol::Status status) {
  REQUIRE(std::holds_alternative<protocol::ErrorReply>(reply));
  const auto& error = std::get<protocol::ErrorReply>(reply);
  INFO("server message: " << error.message);
  CHECK(error.status == status);
  return error;
}

std::vector<protocol::ShareBlob> make_shares(Random& random,
                                             const std::vector<std::size_t>& sizes) {
  std::vector<protocol::ShareBlob> shares;
  shares.reserve(sizes.size());
  for (const std::size_t size : sizes) {
    shares.push_back({random.id(), random.bytes(size)});
  }
  return shares;
}

std::vector<Id> ids_of(const std::vector<protocol::ShareBlob>& shares) {
  std::vector<Id> ids;
  ids.reserve(shares.size());
  for (const auto& share : shares) {
    ids.push_back(share.id);
  }
  return ids;
}

// SIGSTOP is delivered asynchronously: wait (bounded) until every thread of `pid` is stopped.
bool wait_until_stopped(pid_t pid) {
  const auto deadline = Clock::now() + 3s;
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  while (Clock::now() < deadline) {
    bool all_stopped = true;
    for (const auto& task : std::filesystem::directory_iterator(tasks)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      // Fields after the parenthesised command name: "<state> ...".
      const auto close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'T') {
        all_stopped = false;
      }
    }
    if (all_stopped) {
      return true;
    }
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

TEST_CASE("every request round-trips through the transport", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");
  auto client = connect(endpoint_of(kind, server));
  REQUIRE(client->endpoint().kind == kind);
  Random random;

  expect<protocol::Empty>(client->call(protocol::Hello{}));

  const auto shares = make_shares(random, {1u << 20, (2u << 20) + 17, 512u << 10});
  const Id unknown = random.id();
  std::vector<Id> probe = ids_of(shares);
  probe.push_back(unknown);
  CHECK(expect<protocol::Presence>(client->call(protocol::HasShares{probe})).present ==
        std::vector<bool>{false, false, false, false});
  expect<protocol::Empty>(client->call(protocol::PutShares{shares}));
  CHECK(expect<protocol::Presence>(client->call(protocol::HasShares{probe})).present ==
        std::vector<bool>{true, true, true, false});

  // Asked in a different order, returned in the asked order.
  const auto got =
      expect<protocol::Shares>(client->call(protocol::GetShares{{shares[2].id, shares[0].id}}));
  REQUIRE(got.blobs.size() == 2);
  CHECK(got.blobs[0] == shares[2].data);
  CHECK(got.blobs[1] == shares[0].data);

  protocol::Commit commit;
  commit.file = random.id();
  commit.version = 3;
  for (std::uint32_t i = 0; i < shares.size(); ++i) {
    commit.refs.push_back({shares[i].id, 100 + i});
  }
  commit.entry = random.bytes(200);
  commit.manifest = random.bytes(70000);
  expect<protocol::Empty>(client->call(commit));

  const auto record = expect<protocol::FileRecord>(client->call(protocol::GetFile{commit.file}));
  CHECK(record.version == 3);
  CHECK(record.entry == commit.entry);
  CHECK(record.manifest == commit.manifest);

  const auto list = expect<protocol::FileList>(client->call(protocol::ListFiles{}));
  REQUIRE(list.files.size() == 1);
  CHECK(list.files[0].file == commit.file);
  CHECK(list.files[0].version == 3);
  CHECK(list.files[0].entry == commit.entry);

  const auto info = expect<protocol::FileInfo>(client->call(protocol::GetFileInfo{commit.file}));
  CHECK(info.version == 3);
  CHECK(info.shares == 3);
  CHECK(info.chunks == 100 + 101 + 102);
  CHECK(info.stored_bytes == shares[0].data.size() + shares[1].data.size() + shares[2].data.size());

  // Error replies come back as values, intact.
  expect_error(client->call(commit), protocol::Status::conflict);
  protocol::Commit dangling = commit;
  dangling.version = 4;
  dangling.refs.push_back({unknown, 1});
  const auto missing = expect_error(client->call(dangling), protocol::Status::missing_shares);
  CHECK(missing.missing == std::vector<Id>{unknown});

  expect<protocol::Empty>(client->call(protocol::RemoveFile{commit.file}));
  expect_error(client->call(protocol::GetFile{commit.file}), protocol::Status::not_found);
  CHECK(expect<protocol::FileList>(client->call(protocol::ListFiles{})).files.empty());
}

TEST_CASE("a certificate other than the pinned one is refused, naming both", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");

  // Trust on first use sees exactly what the server announces.
  CHECK(transport::probe_fingerprint(kind, server.host(), server.port(), 3000ms) ==
        server.fingerprint());

  auto endpoint = endpoint_of(kind, server);
  endpoint.fingerprint = "SHA256:" + std::string(64, 'a');
  auto client = connect(endpoint);
  try {
    client->call(protocol::Hello{});
    FAIL("a wrong pin was accepted");
  } catch (const AuthError& e) {
    const std::string message = e.what();
    INFO(message);
    CHECK(message.find(server.fingerprint()) != std::string::npos);
    CHECK(message.find(endpoint.fingerprint) != std::string::npos);
    CHECK(message.find(kind + " server at " + endpoint.address()) != std::string::npos);
  }
}

TEST_CASE("a stopped server is reported unavailable within seconds", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");
  const auto endpoint = endpoint_of(kind, server);
  auto client = connect(endpoint);
  expect<protocol::Empty>(client->call(protocol::Hello{}));

  REQUIRE(server.stop() == 0);
  const auto check_unavailable = [&](transport::Transport& transport) {
    const auto start = Clock::now();
    try {
      transport.call(protocol::ListFiles{});
      FAIL("a stopped server answered");
    } catch (const ServerUnavailable& e) {
      const double elapsed = seconds_since(start);
      INFO(e.what() << " after " << elapsed << " s");
      CHECK(elapsed < 5.0);
      CHECK(e.server() == kind);
      CHECK(e.address() == endpoint.address());
      CHECK(std::string(e.what()).find("not reachable") != std::string::npos);
    }
  };
  // The client that had a kept connection, then a fresh one.
  check_unavailable(*client);
  check_unavailable(*connect(endpoint));
}

TEST_CASE("a frozen server fails the call after the idle timeout", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");
  const transport::Timeouts timeouts{1000ms, 1500ms};
  auto client = connect(endpoint_of(kind, server), timeouts);
  expect<protocol::Empty>(client->call(protocol::Hello{}));

  server.signal(SIGSTOP);
  REQUIRE(wait_until_stopped(server.pid()));
  const auto start = Clock::now();
  CHECK_THROWS_AS(client->call(protocol::ListFiles{}), ServerUnavailable);
  const double elapsed = seconds_since(start);
  server.signal(SIGCONT);
  INFO("failed after " << elapsed << " s");
  CHECK(elapsed >= 1.0);
  CHECK(elapsed < 5.0);

  // Once the server runs again, the same transport recovers.
  expect<protocol::FileList>(client->call(protocol::ListFiles{}));
}

TEST_CASE("a server restarted between calls is reconnected transparently", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");
  const auto endpoint = endpoint_of(kind, server);
  auto client = connect(endpoint);
  Random random;
  const auto shares = make_shares(random, {64u << 10});
  expect<protocol::Empty>(client->call(protocol::PutShares{shares}));

  for (int round = 0; round < 2; ++round) {
    server.restart();
    REQUIRE(server.port() == endpoint.port);
    REQUIRE(server.fingerprint() == endpoint.fingerprint);
    CHECK(expect<protocol::Presence>(client->call(protocol::HasShares{ids_of(shares)})).present ==
          std::vector<bool>{true});
  }

  // A large request first on the dropped connection: its body, sent in pieces, is sent again
  // whole on the fresh one.
  server.restart();
  const auto more = make_shares(random, {256u << 10, 300u << 10});
  expect<protocol::Empty>(client->call(protocol::PutShares{more}));
  const auto got = expect<protocol::Shares>(client->call(protocol::GetShares{ids_of(more)}));
  REQUIRE(got.blobs.size() == more.size());
  for (std::size_t i = 0; i < more.size(); ++i)
    CHECK(got.blobs[i] == more[i].data);
}

TEST_CASE("requests and replies close to the batch bound pass", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess server(binary_for(kind), dir / "data");
  auto client = connect(endpoint_of(kind, server));
  Random random;

  std::vector<std::size_t> sizes(7, protocol::kMaxShareBytes);
  sizes.push_back(protocol::kMaxShareBytes - (64u << 10));
  const auto shares = make_shares(random, sizes);
  const auto put_start = Clock::now();
  expect<protocol::Empty>(client->call(protocol::PutShares{shares}));
  const double put_seconds = seconds_since(put_start);

  const auto get_start = Clock::now();
  const auto got = expect<protocol::Shares>(client->call(protocol::GetShares{ids_of(shares)}));
  const double get_seconds = seconds_since(get_start);
  WARN(kind << ": put ~32 MiB in " << put_seconds << " s, got it back in " << get_seconds << " s");
  REQUIRE(got.blobs.size() == shares.size());
  for (std::size_t i = 0; i < shares.size(); ++i) {
    CHECK(got.blobs[i] == shares[i].data);
  }
}

TEST_CASE("host names and IPv6 addresses reach the server", "[transport]") {
  const std::string kind = GENERATE(as<std::string>{}, "HTTPS", "TCP");
  INFO(kind);
  TempDir dir;
  ServerProcess v4(binary_for(kind), dir / "v4");
  auto endpoint = endpoint_of(kind, v4);
  endpoint.host = "localhost";
  expect<protocol::Empty>(connect(endpoint)->call(protocol::Hello{}));

  ServerProcess v6(binary_for(kind), dir / "v6", {"--bind", "::1"});
  for (const std::string host : {"::1", "[::1]"}) {
    endpoint = endpoint_of(kind, v6);
    endpoint.host = host;
    INFO(endpoint.address());
    CHECK(endpoint.address() == "[::1]:" + std::to_string(v6.port()));
    expect<protocol::Empty>(connect(endpoint)->call(protocol::Hello{}));
    CHECK(transport::probe_fingerprint(kind, host, v6.port(), 3000ms) == v6.fingerprint());
  }
}
