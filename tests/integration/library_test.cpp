// The library against real servers: round trips, placement from the servers' side, privacy on
// disk, and a hostile or failing server. Every case starts its own pair of servers.
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <splitfs/client.hpp>

#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::random_string;
using splitfs::testing::read_file;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;
using splitfs::testing::write_file;

namespace {

// A client home pinned to both test servers.
struct Fixture {
  TestServers servers;
  TempDir work{"splitfs-lib"};
  fs::path home = work / "client";

  Fixture() { splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp)); }
  splitfs::Client client() const { return splitfs::Client(home); }

  fs::path put(const std::string& name, const std::string& data) {
    fs::path path = work / name;
    write_file(path, data);
    client().store(path, name);
    return path;
  }
  // Files in `dir` (recursively) other than the output of a fetch.
  static std::vector<fs::path> files_under(const fs::path& dir) {
    std::vector<fs::path> out;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.is_regular_file())
        out.push_back(e.path());
    }
    return out;
  }
  bool fetch_dir_empty() const { return !fs::exists(work / "out") || fs::is_empty(work / "out"); }
};

// Opens a stopped server's index for tampering, as an attacker with the disk would.
struct Index {
  sqlite3* db = nullptr;
  explicit Index(const fs::path& data_dir) {
    REQUIRE(sqlite3_open((data_dir / "store" / "index.sqlite").c_str(), &db) == SQLITE_OK);
  }
  ~Index() { sqlite3_close(db); }
  void exec(const std::string& sql) {
    REQUIRE(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
  }
  std::int64_t number(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(stmt) == SQLITE_ROW);
    const std::int64_t v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
  }
};

}  // namespace

TEST_CASE("files of every boundary size round trip byte for byte") {
  Fixture f;
  fs::create_directories(f.work / "out");
  auto client = f.client();
  std::uint32_t seed = 1;
  for (std::size_t size : {0u, 1u, 1023u, 1024u, 1025u, 2047u, 2048u, 2049u, 1024u * 1024u + 7u}) {
    CAPTURE(size);
    const std::string data = random_string(size, seed++);
    const std::string name = "file-" + std::to_string(size);
    write_file(f.work / name, data);
    client.store(f.work / name, name);
    const fs::path out = client.fetch(name, f.work / "out");
    CHECK(out == f.work / "out" / name);
    CHECK(read_file(out) == data);
  }
  const auto listing = client.list();
  CHECK(listing.size() == 9);
}

TEST_CASE("a 64 MiB file round trips and partial reads return the right bytes") {
  Fixture f;
  const std::string data = random_string(64u << 20, 42);
  f.put("big.bin", data);
  auto client = f.client();
  fs::create_directories(f.work / "out");
  CHECK(read_file(client.fetch("big.bin", f.work / "out")) == data);
  for (auto [offset, length] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, 1}, {1023, 2}, {262143, 10}, {(64u << 20) - 5, 100}, {5000000, 3000000}}) {
    const auto bytes = client.read("big.bin", offset, length);
    const std::size_t expected = std::min<std::uint64_t>(length, data.size() - offset);
    REQUIRE(bytes.size() == expected);
    CHECK(std::memcmp(bytes.data(), data.data() + offset, expected) == 0);
  }
  CHECK(client.read("big.bin", data.size(), 10).empty());
}

TEST_CASE("a 5-chunk file leaves 3 chunks on the HTTPS server and 2 on the TCP server") {
  Fixture f;
  f.put("five", random_string(4 * 1024 + 1, 5));
  const auto st = f.client().stat("five");
  CHECK(st.entry.chunks == 5);
  REQUIRE(st.servers.size() == 2);
  CHECK(st.servers[0].server == "HTTPS");
  CHECK(st.servers[0].chunks == 3);
  CHECK(st.servers[1].server == "TCP");
  CHECK(st.servers[1].chunks == 2);
  // A one-chunk file lives on the HTTPS server only.
  f.put("one", "x");
  const auto one = f.client().stat("one");
  CHECK(one.servers[0].chunks == 1);
  CHECK(one.servers[1].chunks == 0);
}

TEST_CASE("neither server's data folder holds a run of a stored text or its name") {
  Fixture f;
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "Confidential quarterly numbers, line " + std::to_string(i) + "\n";
  f.put("quarterly-report-confidential.txt", text);
  f.servers.https.stop();
  f.servers.tcp.stop();
  for (const fs::path& dir : {f.servers.https.data_dir(), f.servers.tcp.data_dir()}) {
    for (const fs::path& file : Fixture::files_under(dir)) {
      const std::string content = read_file(file);
      CAPTURE(file);
      CHECK(content.find("Confidential quarterly") == std::string::npos);
      CHECK(content.find("numbers, line") == std::string::npos);
      CHECK(content.find("quarterly-report") == std::string::npos);
    }
  }
}

TEST_CASE("a byte flipped in a pack file gives IntegrityError and no output file") {
  Fixture f;
  f.put("victim.bin", random_string(300000, 7));
  f.servers.tcp.stop();
  std::int64_t pos = 0;
  {
    Index index(f.servers.tcp.data_dir());
    pos = index.number("SELECT pos + size / 2 FROM shares LIMIT 1");
  }
  fs::path pack;
  for (const fs::path& file : Fixture::files_under(f.servers.tcp.data_dir() / "store" / "packs")) {
    if (fs::file_size(file) > static_cast<std::uintmax_t>(pos))
      pack = file;
  }
  REQUIRE(!pack.empty());
  {
    std::fstream io(pack, std::ios::in | std::ios::out | std::ios::binary);
    io.seekg(pos);
    char c = 0;
    io.read(&c, 1);
    c ^= 0x20;
    io.seekp(pos);
    io.write(&c, 1);
  }
  f.servers.tcp.restart();
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(f.client().fetch("victim.bin", f.work / "out"), splitfs::IntegrityError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("shares swapped between two stored files give IntegrityError") {
  Fixture f;
  f.put("a.bin", random_string(2048, 11));
  f.put("b.bin", random_string(2048, 12));
  f.servers.https.stop();
  {
    Index index(f.servers.https.data_dir());
    REQUIRE(index.number("SELECT count(*) FROM shares") == 2);
    // Point each share's index row at the other's bytes.
    index.exec("CREATE TEMP TABLE span AS SELECT min(pos) AS lo, max(pos) AS hi FROM shares");
    index.exec(
        "UPDATE shares SET pos = CASE WHEN pos = (SELECT lo FROM span) THEN (SELECT hi FROM span) "
        "ELSE (SELECT lo FROM span) END");
  }
  f.servers.https.restart();
  fs::create_directories(f.work / "out");
  auto client = f.client();
  CHECK_THROWS_AS(client.fetch("a.bin", f.work / "out"), splitfs::IntegrityError);
  CHECK_THROWS_AS(client.fetch("b.bin", f.work / "out"), splitfs::IntegrityError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("a manifest served under another file's name gives IntegrityError") {
  Fixture f;
  f.put("a.txt", "content of a");
  f.put("b.txt", "content of b");
  for (auto* server : {&f.servers.https, &f.servers.tcp}) {
    server->stop();
    {
      Index index(server->data_dir());
      REQUIRE(index.number("SELECT count(*) FROM files") == 2);
      // Give every file row the manifest of the first one.
      index.exec(
          "UPDATE files SET manifest = (SELECT manifest FROM files ORDER BY id LIMIT 1), "
          "entry = (SELECT entry FROM files ORDER BY id LIMIT 1)");
    }
    server->restart();
  }
  fs::create_directories(f.work / "out");
  auto client = f.client();
  int refused = 0;
  for (const char* name : {"a.txt", "b.txt"}) {
    try {
      client.fetch(name, f.work / "out");
    } catch (const splitfs::IntegrityError&) {
      ++refused;
    }
  }
  CHECK(refused == 1);  // the file whose own manifest stayed is still fine
  CHECK_THROWS_AS(client.list(), splitfs::IntegrityError);
}

TEST_CASE("a dropped share gives IntegrityError") {
  Fixture f;
  f.put("gap.bin", random_string(600000, 13));
  f.servers.tcp.stop();
  {
    Index index(f.servers.tcp.data_dir());
    index.exec("DELETE FROM shares WHERE id = (SELECT id FROM shares LIMIT 1)");
  }
  f.servers.tcp.restart();
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(f.client().fetch("gap.bin", f.work / "out"), splitfs::IntegrityError);
  CHECK_THROWS_AS(f.client().read("gap.bin", 0, 600000), splitfs::IntegrityError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("an older manifest served by both servers is caught as a rollback") {
  Fixture f;
  f.put("doc.txt", "version one");
  f.servers.https.stop();
  f.servers.tcp.stop();
  const fs::path saved = f.work / "saved";
  fs::create_directories(saved);
  for (auto* server : {&f.servers.https, &f.servers.tcp}) {
    fs::copy(server->data_dir(), saved / server->data_dir().filename(),
             fs::copy_options::recursive);
  }
  f.servers.https.restart();
  f.servers.tcp.restart();
  f.put("doc.txt", "version two, newer");
  for (auto* server : {&f.servers.https, &f.servers.tcp}) {
    server->stop();
    fs::remove_all(server->data_dir());
    fs::copy(saved / server->data_dir().filename(), server->data_dir(),
             fs::copy_options::recursive);
    server->restart();
  }
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(f.client().fetch("doc.txt", f.work / "out"), splitfs::IntegrityError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("servers that disagree on a file's version give IntegrityError") {
  Fixture f;
  f.put("doc.txt", "version one");
  f.servers.tcp.stop();
  const fs::path saved = f.work / "saved-tcp";
  fs::copy(f.servers.tcp.data_dir(), saved, fs::copy_options::recursive);
  f.servers.tcp.restart();
  f.put("doc.txt", "version two");
  f.servers.tcp.stop();
  fs::remove_all(f.servers.tcp.data_dir());
  fs::copy(saved, f.servers.tcp.data_dir(), fs::copy_options::recursive);
  f.servers.tcp.restart();
  // A fresh client home with the same key has no memory of version two: the disagreement alone
  // must be enough.
  fs::remove(f.home / "state.sqlite");
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(f.client().fetch("doc.txt", f.work / "out"), splitfs::IntegrityError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("one server down gives ServerUnavailable within seconds and no output file") {
  Fixture f;
  f.put("doc.txt", random_string(5000, 3));
  f.servers.tcp.stop();
  fs::create_directories(f.work / "out");
  auto client = f.client();
  const auto start = std::chrono::steady_clock::now();
  try {
    client.fetch("doc.txt", f.work / "out");
    FAIL("fetch succeeded with a server down");
  } catch (const splitfs::ServerUnavailable& e) {
    CHECK(e.server() == "TCP");
    CHECK(e.address() == f.servers.tcp.address());
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(f.fetch_dir_empty());
  write_file(f.work / "new.txt", "new");
  CHECK_THROWS_AS(client.store(f.work / "new.txt", "new.txt"), splitfs::ServerUnavailable);
  // A server that accepts connections but never answers is bounded too.
  f.servers.tcp.restart();
  f.servers.https.signal(SIGSTOP);
  const auto stalled = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(f.client().fetch("doc.txt", f.work / "out"), splitfs::ServerUnavailable);
  f.servers.https.signal(SIGCONT);
  CHECK(std::chrono::steady_clock::now() - stalled < std::chrono::seconds(30));
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("an unknown name is NotFound") {
  Fixture f;
  auto client = f.client();
  CHECK_THROWS_AS(client.fetch("missing.txt", f.work.path()), splitfs::NotFound);
  CHECK_THROWS_AS(client.stat("missing.txt"), splitfs::NotFound);
  CHECK_THROWS_AS(client.remove("missing.txt"), splitfs::NotFound);
  CHECK_THROWS_AS(client.read("missing.txt", 0, 1), splitfs::NotFound);
}

TEST_CASE("a server with a changed identity is refused") {
  Fixture f;
  f.put("doc.txt", "hello");
  const std::string pinned = f.servers.https.fingerprint();
  f.servers.https.stop();
  fs::remove_all(f.servers.https.data_dir() / "tls");
  f.servers.https.restart();
  REQUIRE(f.servers.https.fingerprint() != pinned);
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(f.client().fetch("doc.txt", f.work / "out"), splitfs::AuthError);
  CHECK(f.fetch_dir_empty());
}

TEST_CASE("remove drops a file and a new store after it gets a newer version") {
  Fixture f;
  f.put("doc.txt", "one");
  f.put("doc.txt", "two");
  auto client = f.client();
  CHECK(client.stat("doc.txt").entry.version == 2);
  client.remove("doc.txt");
  CHECK(client.list().empty());
  CHECK_THROWS_AS(client.stat("doc.txt"), splitfs::NotFound);
  f.put("doc.txt", "three");
  CHECK(client.stat("doc.txt").entry.version == 3);
  fs::create_directories(f.work / "out");
  CHECK(read_file(client.fetch("doc.txt", f.work / "out")) == "three");
}

TEST_CASE("split_store and split_fetch use the default home and the current folder") {
  Fixture f;
  ::setenv("SPLITFS_HOME", f.home.c_str(), 1);
  const std::string data = random_string(10000, 99);
  write_file(f.work / "plain.bin", data);
  splitfs::split_store(f.work / "plain.bin");
  fs::create_directories(f.work / "cwd");
  const fs::path previous = fs::current_path();
  fs::current_path(f.work / "cwd");
  splitfs::split_fetch("plain.bin");
  fs::current_path(previous);
  ::unsetenv("SPLITFS_HOME");
  CHECK(read_file(f.work / "cwd" / "plain.bin") == data);
}
