// The library against stand-ins for the problem statement's original servers (tests/doubles/,
// started as real processes on free ports): round trips at the chunk boundaries, placement seen in
// each server's folder, no plaintext or name there, tampering, a stopped or silent server, and a
// server that cuts uploads.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <span>
#include <splitfs/client.hpp>
#include <thread>

#include "core/config.hpp"
#include "core/crypto.hpp"
#include "core/stripe.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"
#include "transport/legacy_transport.hpp"

namespace fs = std::filesystem;
namespace legacy = splitfs::transport::legacy;
using splitfs::Bytes;
using splitfs::Id;
using splitfs::testing::random_string;
using splitfs::testing::read_file;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;
using Clock = std::chrono::steady_clock;

namespace {

// One test double, run as `python3 tests/doubles/SCRIPT --data DIR --port 0 ARGS...`; killed and
// reaped on destruction (and with the test process, through PR_SET_PDEATHSIG).
class Double {
 public:
  Double(const std::string& script, fs::path data, std::vector<std::string> extra = {})
      : data_(std::move(data)) {
    std::vector<std::string> args{
        "python3", splitfs::testing::source_dir() + "/tests/doubles/" + script,
        "--data",  data_.string(),
        "--port",  "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& arg : args)
      argv.push_back(arg.data());
    argv.push_back(nullptr);
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe failed");
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0)
      throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent || ::dup2(fds[1], STDOUT_FILENO) < 0)
        ::_exit(127);
      ::syscall(SYS_close_range, 3U, ~0U, 0U);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    stdout_fd_ = fds[0];
    const std::string line = read_line(std::chrono::seconds(20));
    static const std::regex kLine(R"(^listening on ([0-9.]+):([0-9]{1,5})$)");
    std::smatch match;
    if (!std::regex_match(line, match, kLine)) {
      stop(SIGKILL);
      throw std::runtime_error(script + " did not start: '" + line + "'");
    }
    address_ = match[1].str() + ":" + match[2].str();
  }
  ~Double() { stop(SIGKILL); }
  Double(const Double&) = delete;
  Double& operator=(const Double&) = delete;

  const std::string& address() const { return address_; }
  const fs::path& data() const { return data_; }
  void signal(int sig) { ::kill(pid_, sig); }
  // Sends `sig` and reaps the process.
  void stop(int sig) {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    ::close(stdout_fd_);
  }

 private:
  std::string read_line(std::chrono::seconds limit) {
    std::string line;
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      pollfd pfd{stdout_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 100) <= 0)
        continue;
      char c = 0;
      if (::read(stdout_fd_, &c, 1) != 1 || c == '\n')
        break;
      line.push_back(c);
    }
    return line;
  }

  fs::path data_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string address_;
};

// An object as kept in a double's folder, reassembled from its pieces and checked.
std::optional<Bytes> stored_object(const fs::path& dir, const std::string& object) {
  const fs::path first = dir / legacy::piece_name(object, 0);
  if (!fs::exists(first))
    return std::nullopt;
  const std::string piece0 = read_file(first);
  const auto header = legacy::read_header(splitfs::as_bytes(piece0));
  if (!header)
    return std::nullopt;
  std::string sealed = piece0;
  for (std::size_t i = 1; i < legacy::piece_count(header->length); ++i)
    sealed += read_file(dir / legacy::piece_name(object, i));
  return legacy::open_object(splitfs::as_bytes(sealed));
}

// Ids of the shares kept in a double's folder (their piece 0 names them).
std::set<Id> stored_shares(const fs::path& dir) {
  std::set<Id> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("splitfs-s-") && name.ends_with(".0")) {
      const auto id = splitfs::id_from_hex(name.substr(10, 64));
      REQUIRE(id);
      out.insert(*id);
    }
  }
  return out;
}

bool folder_contains(const fs::path& dir, std::string_view needle) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (read_file(e.path()).find(needle) != std::string::npos)
      return true;
  }
  return false;
}

// Both doubles and a client home configured for them with init --legacy.
struct Fixture {
  explicit Fixture(std::vector<std::string> tcp_args = {})
      : http("legacy_http_server.py", root / "http"),
        tcp("legacy_tcp_server.py", root / "tcp", std::move(tcp_args)) {
    splitfs::InitOptions options;
    options.legacy = true;
    options.https = "http://" + http.address() + "/";
    options.tcp = tcp.address();
    init_result = splitfs::init(home, options);
  }
  splitfs::Client client() const { return splitfs::Client(home); }
  // Lowers the client's timeouts, so waiting on a silent server stays short.
  void set_timeouts(int connect_ms, int idle_ms) {
    std::string config = read_file(home / "config.toml");
    config = std::regex_replace(config, std::regex("connect_timeout_ms = [0-9]+"),
                                "connect_timeout_ms = " + std::to_string(connect_ms));
    config = std::regex_replace(config, std::regex("idle_timeout_ms = [0-9]+"),
                                "idle_timeout_ms = " + std::to_string(idle_ms));
    write_file(home / "config.toml", config);
  }
  fs::path put(const std::string& name, const std::string& data) {
    fs::path path = root / ("in-" + std::to_string(counter++));
    write_file(path, data);
    client().store(path, name);
    return path;
  }

  TempDir root{"splitfs-legacy"};
  Double http;
  Double tcp;
  fs::path home = root / "client";
  splitfs::InitResult init_result;
  int counter = 0;
};

// The share each server must hold for each segment of `data`, computed here from the placement
// rule (chunk k, 0-based, on server k mod 2) rather than by the library's striping.
std::array<std::map<Id, Bytes>, 2> expected_shares(const splitfs::core::KeySet& keys,
                                                   const std::string& data,
                                                   std::size_t segment_bytes) {
  std::array<std::map<Id, Bytes>, 2> out;
  for (std::size_t start = 0; start < data.size(); start += segment_bytes) {
    const std::size_t end = std::min(data.size(), start + segment_bytes);
    std::array<Bytes, 2> shares;
    for (std::size_t chunk = 0; start + chunk * 1024 < end; ++chunk) {
      const std::size_t from = start + chunk * 1024;
      const std::size_t to = std::min(end, from + 1024);
      shares[chunk % 2].insert(shares[chunk % 2].end(),
                               data.begin() + static_cast<std::ptrdiff_t>(from),
                               data.begin() + static_cast<std::ptrdiff_t>(to));
    }
    for (std::size_t j = 0; j < 2; ++j) {
      if (!shares[j].empty())
        out[j][splitfs::core::share_id(keys, shares[j])] = shares[j];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("legacy: init writes an unpinned configuration and a warning", "[legacy]") {
  Fixture f;
  const std::string config = read_file(f.home / "config.toml");
  CHECK(config.find("legacy = true") != std::string::npos);
  CHECK(config.find("fingerprint") == std::string::npos);
  CHECK(config.find("address = '" + f.http.address() + "'") != std::string::npos);
  CHECK(f.init_result.https_fingerprint.empty());
  CHECK(f.init_result.warning.find("no TLS") != std::string::npos);
  CHECK(f.init_result.warning.find("no delete") != std::string::npos);
  CHECK(f.init_result.warning.find("no authentication") != std::string::npos);

  splitfs::InitOptions pinned;
  pinned.legacy = true;
  pinned.force = true;
  pinned.https = f.http.address();
  pinned.tcp = f.tcp.address();
  pinned.tcp_fingerprint = "SHA256:" + std::string(64, 'a');
  CHECK_THROWS_AS(splitfs::init(f.home, pinned), splitfs::ConfigError);
  pinned.tcp_fingerprint.clear();
  pinned.https = "https://" + f.http.address();
  CHECK_THROWS_AS(splitfs::init(f.home, pinned), splitfs::ConfigError);
  // Nothing was replaced by the refused attempts.
  CHECK(read_file(f.home / "config.toml") == config);
}

TEST_CASE("legacy: edge sizes round trip, odd chunks on HTTP and even chunks on TCP", "[legacy]") {
  Fixture f;
  const auto keys = splitfs::core::KeySet::derive(splitfs::core::load_key(f.home));
  const std::uint32_t segment_bytes = splitfs::core::load_config(f.home).segment_bytes;
  const std::vector<std::size_t> sizes{0, 1, 1023, 1024, 1025, 2047, 2048, 2049, (1u << 20) + 7};
  std::array<std::map<Id, Bytes>, 2> expected;
  std::vector<std::string> contents;
  for (const std::size_t size : sizes) {
    const std::string name = "edge/size-" + std::to_string(size) + ".bin";
    contents.push_back(random_string(size, static_cast<std::uint32_t>(size)));
    f.put(name, contents.back());
    const auto shares = expected_shares(keys, contents.back(), segment_bytes);
    for (std::size_t j = 0; j < 2; ++j)
      expected[j].insert(shares[j].begin(), shares[j].end());
  }

  auto client = f.client();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::string name = "edge/size-" + std::to_string(sizes[i]) + ".bin";
    INFO(name);
    const fs::path out = client.fetch(name, f.root / ("out-" + std::to_string(i)));
    CHECK(read_file(out) == contents[i]);
    const auto bytes = client.read(name, 1000, 1050);
    CHECK(std::string(bytes.begin(), bytes.end()) ==
          contents[i].substr(std::min<std::size_t>(1000, sizes[i]), 1050));

    const splitfs::FileStat st = client.stat(name);
    const std::uint64_t chunks = splitfs::core::chunk_count(sizes[i]);
    CHECK(st.entry.size == sizes[i]);
    REQUIRE(st.servers.size() == 2);
    CHECK(st.servers[0].server == "HTTPS");
    CHECK(st.servers[0].chunks == (chunks + 1) / 2);
    CHECK(st.servers[1].chunks == chunks / 2);
    CHECK(st.servers[0].version == 1);
  }

  const auto listing = client.list();
  REQUIRE(listing.size() == sizes.size());
  for (const auto& entry : listing) {
    const std::size_t size = std::stoul(entry.name.substr(entry.name.find('-') + 1));
    CHECK(entry.size == size);
    CHECK(entry.name == "edge/size-" + std::to_string(size) + ".bin");
  }

  // Each folder holds exactly its own server's shares, and each decrypts to the chunks the
  // placement rule gives that server.
  const std::array<const Double*, 2> doubles{&f.http, &f.tcp};
  for (std::size_t j = 0; j < 2; ++j) {
    INFO("server " << j);
    const std::set<Id> held = stored_shares(doubles[j]->data());
    std::set<Id> wanted;
    for (const auto& [id, plain] : expected[j])
      wanted.insert(id);
    CHECK(held == wanted);
    std::uint64_t share_bytes = 0;
    for (const auto& [id, plain] : expected[j]) {
      const auto blob = stored_object(doubles[j]->data(), legacy::share_object(id));
      REQUIRE(blob);
      Bytes opened;
      REQUIRE(splitfs::core::open_share(keys, id, *blob, opened));
      CHECK(opened == plain);
      share_bytes += blob->size();
    }
    // stat's stored bytes are the sizes of the shares the server keeps for the big file.
    const auto big = expected_shares(keys, contents.back(), segment_bytes);
    std::uint64_t big_bytes = 0;
    for (const auto& [id, plain] : big[j])
      big_bytes += stored_object(doubles[j]->data(), legacy::share_object(id))->size();
    CHECK(client.stat("edge/size-1048583.bin").servers[j].stored_bytes == big_bytes);
    CHECK(share_bytes > 0);

    // Every piece fits the original TCP server's single read, and nothing readable is there.
    for (const auto& e : fs::directory_iterator(doubles[j]->data()))
      CHECK(fs::file_size(e.path()) <= legacy::kPieceBytes);
    CHECK_FALSE(folder_contains(doubles[j]->data(), "size-"));
    CHECK_FALSE(folder_contains(doubles[j]->data(), "edge/"));
    CHECK_FALSE(folder_contains(doubles[j]->data(), contents.back().substr(5000, 32)));
    CHECK_FALSE(folder_contains(doubles[j]->data(), contents.back().substr(6100, 32)));
  }
}

TEST_CASE("legacy: overwrite, remove and store again", "[legacy]") {
  Fixture f;
  f.put("notes.txt", "first version");
  f.put("notes.txt", "second version, longer");
  f.put("other.txt", "another file");
  auto client = f.client();
  CHECK(client.stat("notes.txt").entry.version == 2);
  CHECK(read_file(client.fetch("notes.txt", f.root / "notes.out")) == "second version, longer");

  client.remove("notes.txt");
  CHECK_THROWS_AS(client.fetch("notes.txt", f.root / "gone.out"), splitfs::NotFound);
  CHECK_THROWS_AS(client.remove("notes.txt"), splitfs::NotFound);
  CHECK_FALSE(fs::exists(f.root / "gone.out"));
  const auto listing = client.list();
  REQUIRE(listing.size() == 1);
  CHECK(listing[0].name == "other.txt");
  // Nothing can be deleted on the originals: the shares stay, the record became a tombstone.
  CHECK_FALSE(stored_shares(f.http.data()).empty());

  f.put("notes.txt", "third");
  CHECK(read_file(f.client().fetch("notes.txt", f.root / "again.out")) == "third");
  CHECK(f.client().list().size() == 2);
}

TEST_CASE("legacy: objects for the mount work on the original servers", "[legacy]") {
  Fixture f;
  auto client = f.client();
  const std::string a = random_string(client.segment_bytes(), 1);
  const std::string b = random_string(5000, 2);
  const std::vector<std::span<const std::uint8_t>> segments{
      {reinterpret_cast<const std::uint8_t*>(a.data()), a.size()},
      {reinterpret_cast<const std::uint8_t*>(b.data()), b.size()}};
  auto refs = client.stage_segments(segments);
  splitfs::ObjectAttributes attributes;
  attributes.size = a.size() + b.size();
  attributes.mode = 0100644;
  const auto stored = client.commit_object("dir/file", 0, attributes, refs);
  CHECK(stored.version == 1);
  CHECK(client.object_version("dir/file") == 1);
  const auto opened = f.client().open_object("dir/file");
  CHECK(opened.size == a.size() + b.size());
  const auto back = f.client().read_segments(opened.segments);
  REQUIRE(back.size() == 2);
  CHECK(std::string(back[1].begin(), back[1].end()) == b);
  CHECK(f.client().list().empty());

  // A second client with the same key but no local history: the servers' version check alone
  // refuses a commit from a stale version.
  const fs::path other = f.root / "other";
  splitfs::InitOptions options;
  options.legacy = true;
  options.https = f.http.address();
  options.tcp = f.tcp.address();
  splitfs::init(other, options);
  fs::copy_file(f.home / "key", other / "key", fs::copy_options::overwrite_existing);
  splitfs::Client second(other);
  CHECK_THROWS_AS(second.commit_object("dir/file", 0, attributes, refs), splitfs::ConflictError);
  CHECK(second.open_object("dir/file").version == 1);
}

TEST_CASE("legacy: altered data on a server is an IntegrityError", "[legacy]") {
  Fixture f;
  const auto keys = splitfs::core::KeySet::derive(splitfs::core::load_key(f.home));
  const std::uint32_t segment_bytes = splitfs::core::load_config(f.home).segment_bytes;
  const std::string one = random_string(300000, 7);
  const std::string two = random_string(300000, 8);
  f.put("one", one);
  f.put("two", two);
  const auto shares_one = expected_shares(keys, one, segment_bytes);
  const auto shares_two = expected_shares(keys, two, segment_bytes);

  SECTION("a flipped byte in a piece") {
    const Id id = shares_one[0].begin()->first;
    const fs::path piece = f.http.data() / legacy::piece_name(legacy::share_object(id), 3);
    std::string bytes = read_file(piece);
    bytes[100] = static_cast<char>(bytes[100] ^ 0x40);
    write_file(piece, bytes);
    CHECK_THROWS_AS(f.client().fetch("one", f.root / "one.out"), splitfs::IntegrityError);
    CHECK_FALSE(fs::exists(f.root / "one.out"));
  }
  SECTION("a share replaced by another, whole and well formed") {
    // What a server can do that no digest of its own can catch: serve another share's bytes.
    const Id victim = shares_one[1].begin()->first;
    const Id other = shares_two[1].begin()->first;
    const std::string from = legacy::share_object(other);
    const std::string to = legacy::share_object(victim);
    for (std::size_t i = 0; fs::exists(f.tcp.data() / legacy::piece_name(from, i)); ++i) {
      fs::copy_file(f.tcp.data() / legacy::piece_name(from, i),
                    f.tcp.data() / legacy::piece_name(to, i), fs::copy_options::overwrite_existing);
    }
    CHECK_THROWS_AS(f.client().fetch("one", f.root / "one.out"), splitfs::IntegrityError);
    CHECK_FALSE(fs::exists(f.root / "one.out"));
    CHECK(read_file(f.client().fetch("two", f.root / "two.out")) == two);
  }
  SECTION("a damaged newest catalog falls back to the previous one") {
    // The catalog alternates slots; damage the newest (it lists "two").
    const auto a = legacy::read_header(
        splitfs::as_bytes(read_file(f.http.data() / legacy::piece_name("splitfs-catalog-a", 0))));
    const auto b = legacy::read_header(
        splitfs::as_bytes(read_file(f.http.data() / legacy::piece_name("splitfs-catalog-b", 0))));
    REQUIRE(a);
    REQUIRE(b);
    const std::string newest =
        a->generation > b->generation ? "splitfs-catalog-a" : "splitfs-catalog-b";
    const fs::path piece = f.http.data() / legacy::piece_name(newest, 0);
    std::string bytes = read_file(piece);
    bytes.back() = static_cast<char>(bytes.back() ^ 1);
    write_file(piece, bytes);
    // The TCP server's catalog still lists both; the HTTP one falls back to listing "one".
    const auto listing = f.client().list();
    REQUIRE(listing.size() == 2);
    f.put("three", "3");
    CHECK(f.client().list().size() == 3);
    CHECK(read_file(f.client().fetch("two", f.root / "two.out")) == two);
  }
}

TEST_CASE("legacy: a stopped or silent server is ServerUnavailable within seconds", "[legacy]") {
  Fixture f;
  f.put("file", random_string(50000, 3));
  f.set_timeouts(1000, 1500);

  SECTION("stopped") {
    f.tcp.stop(SIGKILL);
    const auto start = Clock::now();
    try {
      f.client().fetch("file", f.root / "file.out");
      FAIL("fetch succeeded without the TCP server");
    } catch (const splitfs::ServerUnavailable& e) {
      CHECK(std::string(e.what()).find("TCP server at " + f.tcp.address()) != std::string::npos);
    }
    CHECK(Clock::now() - start < std::chrono::seconds(5));
    CHECK_FALSE(fs::exists(f.root / "file.out"));
  }
  SECTION("silent") {
    f.http.signal(SIGSTOP);
    const auto start = Clock::now();
    CHECK_THROWS_AS(f.client().fetch("file", f.root / "file.out"), splitfs::ServerUnavailable);
    CHECK(Clock::now() - start < std::chrono::seconds(8));
    CHECK_THROWS_AS(f.put("new", "data"), splitfs::ServerUnavailable);
    f.http.signal(SIGCONT);
  }
}

TEST_CASE("legacy: uploads the TCP server cuts are caught and sent again", "[legacy]") {
  SECTION("every third upload cut: the store still round trips") {
    Fixture f({"--cut-every", "3"});
    const std::string data = random_string((1u << 20) + 7, 4);
    f.put("big", data);
    CHECK(read_file(f.client().fetch("big", f.root / "big.out")) == data);
  }
  SECTION("every upload cut: the store fails instead of reporting success") {
    Fixture f({"--cut-every", "1"});
    CHECK_THROWS_AS(f.put("big", random_string(100000, 5)), splitfs::ServerError);
    CHECK(f.client().list().empty());
  }
}
