// Several server processes per door on one shared store (Swift + PostgreSQL from the ctest
// fixture): two processes per door share a data folder (one TLS identity, one users file) and one
// bucket and index schema. A client (and a mount) pinned to the first pair writes, a client (and a
// second mount) pinned to the second pair reads. Then HAProxy (Debian's) in front of each pair, as
// docs/deployment.md describes: a client keeps storing through the balancers while one process per
// door is killed with SIGKILL mid-store; a store that fails is tried again (as the mount's
// write-back does), lands on the survivors, and nothing is lost.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <splitfs/client.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.hpp"
#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::Enrol;
using splitfs::testing::random_string;
using splitfs::testing::read_file;
using splitfs::testing::run_program;
using splitfs::testing::ServerProcess;
using splitfs::testing::shared_store_args;
using splitfs::testing::TempDir;
using splitfs::testing::test_engines;
using splitfs::testing::write_file;

namespace {

// Two processes of one door on one data folder and one shared store.
struct DoorPair {
  DoorPair(const std::string& binary, const fs::path& data, const std::vector<std::string>& args)
      : first(binary, data, args), second(binary, data, args, Enrol::none) {
    REQUIRE(first.fingerprint() == second.fingerprint());
  }
  ServerProcess first;
  ServerProcess second;
};

struct Pairs {
  TempDir root{"splitfs-scaleout"};
  DoorPair https{"splitfs-https-server", root / "https", shared_store_args(test_engines())};
  DoorPair tcp{"splitfs-tcp-server", root / "tcp", shared_store_args(test_engines())};
  DoorPair& h() { return https; }
  DoorPair& t() { return tcp; }
};

// A TCP socket bound to a free loopback port, for HAProxy to take over (`bind fd@N`): no other
// process can take the port between our choice and its bind.
splitfs::Fd bound_socket(std::uint16_t& port) {
  splitfs::Fd fd(::socket(AF_INET, SOCK_STREAM, 0));
  REQUIRE(fd);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t length = sizeof addr;
  REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &length) == 0);
  port = ntohs(addr.sin_port);
  return fd;
}

// HAProxy in TCP mode before two server processes: health checks every 200 ms, a connection that
// cannot reach its server is sent to the other.
class Balancer {
 public:
  Balancer(const fs::path& dir, const std::string& name, const ServerProcess& a,
           const ServerProcess& b) {
    const splitfs::Fd listener = bound_socket(port_);
    constexpr int kListenerFd = 3;  // where HAProxy finds it
    const fs::path config = dir / (name + ".cfg");
    std::ofstream out(config);
    out << "global\n  maxconn 2000\n"
        << "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n"
        << "  timeout server 120s\n  retries 3\n  option redispatch\n"
        << "frontend door\n  bind fd@" << kListenerFd << "\n  default_backend servers\n"
        << "backend servers\n  balance roundrobin\n"
        << "  default-server inter 200ms fall 1 rise 2 on-marked-down shutdown-sessions\n"
        << "  server a " << a.address() << " check\n"
        << "  server b " << b.address() << " check\n";
    out.close();
    const std::string log = (dir / (name + ".log")).string();
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::dup2(listener.get(), kListenerFd);  // without close-on-exec
      ::execlp("haproxy", "haproxy", "-db", "-f", config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Ready once it accepts.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(port_);
      const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      ::close(fd);
      if (up)
        break;
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~Balancer() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// `splitfs mount -f` of `home` on `mountpoint` for the length of a test; unmounted (lazily as a
// last resort) and reaped on destruction. Dies with the test.
class MountProcess {
 public:
  MountProcess(const fs::path& home, const fs::path& mountpoint) : mountpoint_(mountpoint) {
    fs::create_directories(mountpoint_);
    const std::string binary = splitfs::testing::bin_dir() + "/splitfs";
    const std::string log = mountpoint_.string() + ".log";
    const std::string options = "refresh=0.2,attr_timeout=0.2,entry_timeout=0.2";
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(binary.c_str(), binary.c_str(), "--home", home.c_str(), "mount", "-f", "-o",
              options.c_str(), mountpoint_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!fs::exists(mountpoint_ / ".splitfs" / "stats")) {
      int status = 0;
      REQUIRE(::waitpid(pid_, &status, WNOHANG) == 0);
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~MountProcess() {
    for (int attempt = 0; attempt < 50; ++attempt) {
      if (run_program({"fusermount3", "-u", "-q", mountpoint_.string()}) == 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        run_program({"fusermount3", "-u", "-z", "-q", mountpoint_.string()});
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  MountProcess(const MountProcess&) = delete;
  MountProcess& operator=(const MountProcess&) = delete;
  fs::path operator/(const std::string& name) const { return mountpoint_ / name; }

 private:
  fs::path mountpoint_;
  pid_t pid_ = -1;
};

template <typename F>
bool eventually(F&& f) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    if (f())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

fs::path init_home(const fs::path& home, const std::string& https, const std::string& tcp,
                   Pairs& pairs, bool keep_key) {
  splitfs::InitOptions options;
  options.https = https;
  options.tcp = tcp;
  options.https_fingerprint = pairs.h().first.fingerprint();
  options.tcp_fingerprint = pairs.t().first.fingerprint();
  options.force = keep_key;
  splitfs::init(home, options);
  return home;
}

}  // namespace

TEST_CASE("two server processes per door on one store: stored through one, read through the other",
          "[scaleout][servers]") {
  Pairs pairs;
  TempDir work("splitfs-scaleout-client");
  const fs::path home_a =
      init_home(work / "a", pairs.h().first.address(), pairs.t().first.address(), pairs, false);
  // The same key in a second home, pinned to the other process of each door.
  fs::copy(home_a, work / "b", fs::copy_options::recursive);
  const fs::path home_b =
      init_home(work / "b", pairs.h().second.address(), pairs.t().second.address(), pairs, true);

  splitfs::Client a(home_a);
  splitfs::Client b(home_b);
  const std::string content = random_string(3 * a.segment_bytes() + 123, 1);
  write_file(work / "in", content);
  a.store(work / "in", "docs/report.bin");
  b.fetch("docs/report.bin", work / "out");
  CHECK(read_file(work / "out") == content);

  // A new version through the second pair is what the first pair serves next.
  const std::string second = random_string(a.segment_bytes() / 2, 2);
  write_file(work / "in2", second);
  b.store(work / "in2", "docs/report.bin");
  a.fetch("docs/report.bin", work / "out2");
  CHECK(read_file(work / "out2") == second);
  const auto listed = a.list();
  REQUIRE(listed.size() == 1);
  b.remove("docs/report.bin");
  CHECK(a.list().empty());
}

TEST_CASE("a mount writes through one process of each door, a second mount reads through the other",
          "[scaleout][servers]") {
  Pairs pairs;
  TempDir work("splitfs-scaleout-mount");
  fs::permissions(work.path(),
                  fs::perms::owner_all | fs::perms::group_exec | fs::perms::others_exec);
  const fs::path home_a =
      init_home(work / "a", pairs.h().first.address(), pairs.t().first.address(), pairs, false);
  fs::copy(home_a, work / "b", fs::copy_options::recursive);
  const fs::path home_b =
      init_home(work / "b", pairs.h().second.address(), pairs.t().second.address(), pairs, true);
  const std::string content = random_string(3u << 20, 7);
  {
    MountProcess a(home_a, work / "mnt-a");
    MountProcess b(home_b, work / "mnt-b");
    write_file(a / "written-by-a.bin", content);
    CHECK(eventually([&] { return read_file(b / "written-by-a.bin") == content; }));
    write_file(b / "written-by-b.txt", "from b");
    CHECK(eventually([&] { return read_file(a / "written-by-b.txt") == "from b"; }));
  }
  // And through the command line, pinned to the first pair: the same store.
  CHECK(run_program({splitfs::testing::bin_dir() + "/splitfs", "--home", home_a.string(), "fetch",
                     "/written-by-b.txt", "-o", (work / "out").string()}) == 0);
  CHECK(read_file(work / "out") == "from b");
}

TEST_CASE(
    "behind a TCP balancer, a process killed mid-store costs nothing: the client retries on "
    "the other",
    "[scaleout][servers]") {
  Pairs pairs;
  Balancer https(pairs.root.path(), "https", pairs.h().first, pairs.h().second);
  Balancer tcp(pairs.root.path(), "tcp", pairs.t().first, pairs.t().second);
  TempDir work("splitfs-scaleout-client");
  const fs::path home = init_home(work / "home", https.address(), tcp.address(), pairs, false);

  splitfs::Client client(home);
  const std::size_t segment = client.segment_bytes();
  constexpr int kFiles = 12;
  std::vector<std::string> contents;
  contents.reserve(kFiles);
  for (int i = 0; i < kFiles; ++i)
    contents.push_back(random_string(24 * segment + static_cast<std::size_t>(i), 100 + i));

  // A writer that keeps storing; each store that fails is tried again, as the mount's write-back
  // does, and must then succeed through the surviving processes.
  std::atomic<int> stored{0};
  std::atomic<int> started{0};
  std::atomic<int> retried{0};
  std::string failure;
  std::thread writer([&] {
    for (int i = 0; i < kFiles; ++i) {
      const fs::path input = work / ("in" + std::to_string(i));
      write_file(input, contents[static_cast<std::size_t>(i)]);
      for (int attempt = 0;; ++attempt) {
        try {
          ++started;
          splitfs::Client(home).store(input, "f" + std::to_string(i));
          ++stored;
          break;
        } catch (const splitfs::ServerUnavailable& e) {
          ++retried;
          if (attempt == 20) {
            failure = e.what();
            return;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }
  });
  // Into the fourth store.
  while (started < 4 && failure.empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const int stored_before_kill = stored;
  pairs.h().first.kill(SIGKILL);
  pairs.t().second.kill(SIGKILL);
  writer.join();
  INFO(failure);
  CHECK(stored_before_kill < kFiles);
  // Usually the transports resend the interrupted request on a fresh connection themselves (the
  // balancer routes it to the survivor), so `retried` often stays 0.
  REQUIRE(stored == kFiles);

  // Everything reads back through the survivors, and the stores are consistent.
  for (int i = 0; i < kFiles; ++i) {
    const fs::path out = work / ("out" + std::to_string(i));
    client.fetch("f" + std::to_string(i), out);
    CHECK(read_file(out) == contents[static_cast<std::size_t>(i)]);
  }
  CHECK(client.list().size() == kFiles);
}
