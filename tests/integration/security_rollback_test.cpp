// Rollback and replay: a server restored from an older copy of its data folder (alone or together
// with the other one), a server that never saw a file the other holds, and a server serving
// another user's ciphertext are all caught by the client as IntegrityError, never served as data.
#include <sqlite3.h>

#include <string>
#include <vector>

#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;

namespace {

struct Fixture {
  SecureServers s;
  Home alice{s.servers, "alice"};
  TempDir work{"splitfs-rollback"};

  Fixture() { s.enrol("alice", alice.fingerprint); }

  void put(const std::string& name, const std::string& data) {
    write_file(work / "in", data);
    alice.client().store(work / "in", name);
  }
  std::string get(const std::string& name) {
    alice.client().fetch(name, work / "out");
    return read_file(work / "out");
  }
  // A copy of a stopped server's data folder, as a backup would take it.
  fs::path backup(ServerProcess& server, const std::string& label) {
    server.stop();
    fs::path copy = work / ("backup-" + label);
    fs::copy(server.data_dir(), copy, fs::copy_options::recursive);
    server.restart();
    return copy;
  }
  void restore(ServerProcess& server, const fs::path& copy) {
    server.stop();
    fs::remove_all(server.data_dir());
    fs::copy(copy, server.data_dir(), fs::copy_options::recursive);
    server.restart();
  }
  // The fetch fails with IntegrityError and leaves no output; returns the message.
  std::string refused(const std::string& name) {
    fs::remove(work / "out");
    try {
      alice.client().fetch(name, work / "out");
    } catch (const IntegrityError& e) {
      CHECK_FALSE(fs::exists(work / "out"));
      return e.what();
    }
    FAIL("the fetch of " << name << " was served");
    return {};
  }
};

}  // namespace

TEST_CASE("security: one server restored from an older copy of its data folder is detected") {
  Fixture f;
  f.put("doc", "version one");
  for (ServerProcess* server : f.s.both()) {
    CAPTURE(server->binary());
    const fs::path copy = f.backup(*server, server->data_dir().filename().string());
    f.put("doc", "version two, which the restored server never saw");
    f.restore(*server, copy);
    const std::string message = f.refused("doc");
    CHECK(message.find("disagree") != std::string::npos);
    // Storing again repairs it.
    f.put("doc", "version three");
    CHECK(f.get("doc") == "version three");
  }
}

TEST_CASE("security: both servers restored to older copies are detected as a rollback") {
  Fixture f;
  // A second machine with the same key, that only ever fetches version two, catches it too. (It is
  // enrolled before the backups: a restored data folder brings back its users file as it was.)
  Home laptop(f.s.servers, "laptop");
  f.s.enrol("alice", laptop.fingerprint);
  f.put("doc", "version one");
  const fs::path https = f.backup(f.s.servers.https, "https");
  const fs::path tcp = f.backup(f.s.servers.tcp, "tcp");
  f.put("doc", "version two");
  const fs::path exported = f.work / "key.export";
  export_key(f.alice.path(), exported, "correct horse");
  import_key(laptop.path(), exported, "correct horse", false, true);
  laptop.client().fetch("doc", f.work / "laptop-doc");
  CHECK(read_file(f.work / "laptop-doc") == "version two");

  f.restore(f.s.servers.https, https);
  f.restore(f.s.servers.tcp, tcp);
  CHECK(f.refused("doc").find("rollback") != std::string::npos);
  fs::remove(f.work / "laptop-doc");
  CHECK_THROWS_AS(laptop.client().fetch("doc", f.work / "laptop-doc"), IntegrityError);
  CHECK_FALSE(fs::exists(f.work / "laptop-doc"));
}

TEST_CASE("security: a server restored from before a file existed does not hide it silently") {
  Fixture f;
  f.put("old", "stored before the backup");
  const fs::path copy = f.backup(f.s.servers.tcp, "tcp");
  f.put("new", "stored after the backup");
  f.restore(f.s.servers.tcp, copy);
  CHECK(f.refused("new").find("partly stored") != std::string::npos);
  CHECK(f.get("old") == "stored before the backup");
}

namespace {

void tamper(ServerProcess& server, const char* sql) {
  server.stop();
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((server.data_dir() / "store" / "index.sqlite").c_str(), &db) == SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  INFO((error ? error : ""));
  sqlite3_free(error);
  CHECK(rc == SQLITE_OK);
  sqlite3_close(db);
  server.restart();
}

}  // namespace

TEST_CASE("security: another user's data replayed in place of one's own is refused") {
  Fixture f;
  Home bob(f.s.servers, "bob");
  f.s.enrol("bob", bob.fingerprint);
  f.put("mine", random_text(std::size_t{100} * 1024, 1));
  write_file(f.work / "bob-in", random_text(std::size_t{100} * 1024, 2));
  bob.client().store(f.work / "bob-in", "his");

  SECTION("both servers serve bob's file and shares as alice's: the client refuses them") {
    // A malicious pair of servers, consistent with each other, so only the client's own checks
    // stand between alice and bob's ciphertext.
    for (ServerProcess* server : f.s.both()) {
      tamper(*server,
             "CREATE TEMP TABLE mine AS SELECT id FROM files WHERE user = 'alice';"
             "DELETE FROM files WHERE user = 'alice';"
             "UPDATE files SET user = 'alice', id = (SELECT id FROM mine) WHERE user = 'bob';"
             "UPDATE shares SET user = 'alice' WHERE user = 'bob';");
    }
    CHECK(f.refused("mine").find("failed verification") != std::string::npos);
    CHECK_THROWS_AS(f.alice.client().list(), IntegrityError);
  }
  SECTION("a server pointing alice's shares at bob's records is caught") {
    tamper(f.s.servers.https,
           "UPDATE shares SET (pack, pos, size) = (SELECT pack, pos, size FROM shares WHERE user = "
           "'bob' LIMIT 1) WHERE user = 'alice'");
    CHECK_FALSE(f.refused("mine").empty());
  }
}
