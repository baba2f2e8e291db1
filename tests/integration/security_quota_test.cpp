// Per-user quotas: a store that would exceed a user's quota fails with QuotaExceeded, what was
// stored before stays intact, another user is not affected, and concurrent uploads cannot overshoot
// together.
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;
using protocol::Status;

TEST_CASE("security: a store over the quota fails cleanly and keeps what was stored") {
  SecureServers s;
  Home alice(s.servers, "alice");
  Home bob(s.servers, "bob");
  // Each server holds about half of a file.
  s.enrol("alice", alice.fingerprint, "600K");
  s.enrol("bob", bob.fingerprint);
  TempDir work("splitfs-quota");
  const std::string small = random_text(std::size_t{400} * 1024, 1);
  const std::string large = random_text(std::size_t{2} * 1024 * 1024, 2);
  write_file(work / "small", small);
  write_file(work / "large", large);

  alice.client().store(work / "small", "small");
  try {
    alice.client().store(work / "large", "large");
    FAIL("a store over the quota succeeded");
  } catch (const QuotaExceeded& e) {
    const std::string message = e.what();
    CHECK(message.find("quota exceeded") != std::string::npos);
    CHECK(message.find("alice") != std::string::npos);
    CHECK(message.find(s.servers.https.data_dir().string()) == std::string::npos);
    CHECK(message.find(s.servers.tcp.data_dir().string()) == std::string::npos);
  }
  // Overwriting the stored file with the large one fails too, and leaves the old version.
  CHECK_THROWS_AS(alice.client().store(work / "large", "small"), QuotaExceeded);
  const auto listed = alice.client().list();
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].name == "small");
  CHECK(listed[0].size == small.size());
  alice.client().fetch("small", work / "small.back");
  CHECK(read_file(work / "small.back") == small);

  // Another user is not bound by alice's quota.
  bob.client().store(work / "large", "large");

  // The refused requests left nothing behind (each upload is admitted whole or not at all), so
  // what still fits can be stored.
  alice.client().remove("small");
  const std::string medium = random_text(std::size_t{200} * 1024, 3);
  write_file(work / "medium", medium);
  alice.client().store(work / "medium", "medium");
  alice.client().fetch("medium", work / "medium.back");
  CHECK(read_file(work / "medium.back") == medium);
}

TEST_CASE("security: the quota bounds raw uploads on both servers, also concurrent ones") {
  SecureServers s;
  Identity alice;
  s.enrol("alice", alice.tls.fingerprint, "1M");
  for (const std::string kind : {"HTTPS", "TCP"}) {
    CAPTURE(kind);
    ServerProcess& server = kind == "HTTPS" ? s.servers.https : s.servers.tcp;
    // Four connections race to upload 300 KiB each: at most three fit in 1 MiB.
    std::vector<std::thread> threads;
    std::vector<protocol::Reply> replies(4);
    for (std::size_t i = 0; i < replies.size(); ++i) {
      threads.emplace_back([&, i] {
        auto client = connect(kind, server, alice.certificate());
        replies[i] = client->call(protocol::PutShares{
            {{make_id(static_cast<std::uint8_t>(40 + i)),
              pattern(std::size_t{300} * 1024, static_cast<std::uint8_t>(i))}}});
      });
    }
    for (auto& thread : threads)
      thread.join();
    int stored = 0;
    for (const auto& reply : replies) {
      if (std::holds_alternative<protocol::Empty>(reply)) {
        ++stored;
      } else {
        expect_error(reply, Status::quota_exceeded);
      }
    }
    CHECK(stored == 3);
    auto client = connect(kind, server, alice.certificate());
    expect_error(
        client->call(protocol::PutShares{{{make_id(50), pattern(std::size_t{200} * 1024, 9)}}}),
        Status::quota_exceeded);
    // A commit's manifest counts too.
    expect_error(client->call(protocol::Commit{
                     make_id(60), 1, {}, pattern(10, 1), pattern(std::size_t{200} * 1024, 2)}),
                 Status::quota_exceeded);
    // Small requests still fit.
    expect<protocol::Empty>(client->call(protocol::PutShares{{{make_id(51), pattern(1000, 3)}}}));
  }
}
