// The mount's log and its group commit: every log line also goes to the system log under the ident
// "splitfs-mount" (read back through a listener on /dev/log when the machine has no logger), and
// many small new files closed in a row are journaled at close and committed together, all of them
// stored once the unmount completes.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"

using splitfs::testing::Mount;
using splitfs::testing::read_file;

namespace {

// A datagram socket bound at /dev/log for as long as it lives, read by a thread of its own the
// whole time: every process on the machine that logs sends here meanwhile, and a queue left full
// (10 datagrams) would block their syslog() calls, other tests' mounts included.
class SyslogListener {
 public:
  // A listener that never reads (the logger stuck), for the test that it stops nothing.
  struct Deaf {};

  SyslogListener() {
    if (bind())
      reader_ = std::jthread([this](const std::stop_token& stop) { read(stop); });
  }
  explicit SyslogListener(Deaf) { bind(); }
  ~SyslogListener() {
    if (fd_ < 0)
      return;
    reader_ = {};  // asks the reader to stop and joins it
    ::close(fd_);
    ::unlink(kPath);
  }
  SyslogListener(const SyslogListener&) = delete;
  SyslogListener& operator=(const SyslogListener&) = delete;

  bool ok() const { return fd_ >= 0; }
  int error() const { return error_; }  // why not, when not ok()

  // Sends datagrams to the listener until its queue is full; how many went.
  int fill() const {
    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, kPath, sizeof addr.sun_path - 1);
    int sent = 0;
    while (sent < 10'000 && ::sendto(fd, "<14>filler", 10, MSG_DONTWAIT,
                                     reinterpret_cast<const sockaddr*>(&addr), sizeof addr) > 0) {
      ++sent;
    }
    ::close(fd);
    return sent;
  }

  // Messages received until one contains every word of `wanted`, or 10 s passed.
  std::vector<std::string> until(const std::vector<std::string>& wanted) {
    const auto has_all = [&](const std::string& message) {
      return std::all_of(wanted.begin(), wanted.end(), [&](const std::string& w) {
        return message.find(w) != std::string::npos;
      });
    };
    std::unique_lock lock(mutex_);
    std::size_t seen = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      for (; seen < messages_.size(); ++seen) {
        if (has_all(messages_[seen]))
          return {messages_.begin(), messages_.begin() + static_cast<std::ptrdiff_t>(seen) + 1};
      }
      if (arrived_.wait_until(lock, deadline) == std::cv_status::timeout)
        return messages_;
    }
  }

  static constexpr const char* kPath = "/dev/log";

 private:
  bool bind() {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
      error_ = errno;
      return false;
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, kPath, sizeof addr.sun_path - 1);
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      error_ = errno;
      ::close(fd_);
      fd_ = -1;
      return false;
    }
    ::chmod(kPath, 0666);
    timeval tv{0, 100'000};  // how long the reader takes to notice the end
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return true;
  }

  void read(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0)
        continue;
      std::lock_guard lock(mutex_);
      messages_.emplace_back(buffer, static_cast<std::size_t>(n));
      arrived_.notify_all();
    }
  }

  int fd_ = -1;
  int error_ = 0;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<std::string> messages_;
  std::jthread reader_;
};

// False, with a warning, where the test cannot listen at /dev/log: a logger of this machine is
// there (the test listens only where none is), or binding failed.
bool listening(const SyslogListener& listener) {
  if (listener.ok())
    return true;
  WARN("skipped: cannot listen on " << SyslogListener::kPath << " ("
                                    << std::strerror(listener.error()) << ")");
  return false;
}

}  // namespace

TEST_CASE("mount: the log goes to the system log too, with the same words", "[mount][log]") {
  SyslogListener listener;
  if (!listening(listener))
    return;
  Mount m;
  const std::string mounted = "mounted " + m.mountpoint.string();
  const auto messages = listener.until({"splitfs-mount[", mounted});
  REQUIRE_FALSE(messages.empty());
  const std::string& last = messages.back();
  INFO("last message: " << last);
  CHECK(last.find("splitfs-mount[") != std::string::npos);
  CHECK(last.find(mounted) != std::string::npos);
  // The same words are in the log file.
  CHECK(read_file(m.home / "mount.log").find(mounted) != std::string::npos);
}

TEST_CASE("mount: small new files are journaled at close and committed in groups",
          "[mount][groupcommit]") {
  Mount m;
  constexpr int kFiles = 200;
  REQUIRE(::mkdir((m / "many").c_str(), 0755) == 0);
  for (int i = 0; i < kFiles; ++i) {
    const std::string body = "file " + std::to_string(i) + std::string(100 + i, 'x');
    const int fd = ::open((m / ("many/f" + std::to_string(i))).c_str(), O_WRONLY | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()));
    REQUIRE(::close(fd) == 0);
  }
  // Each close() was answered from the journal; the uploads follow, several files per commit of
  // the tree (a close() that committed on its own would cost a tree commit per file).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (m.stats().at("uploads_done") < kFiles && std::chrono::steady_clock::now() < deadline)
    ::usleep(20'000);
  const auto stats = m.stats();
  CHECK(stats.at("uploads_done") == kFiles);
  CHECK(stats.at("files_committed") >= kFiles);
  CHECK(stats.at("tree_commits") < kFiles);
  // Most of them in commit batches: one commit request per server for a round of files.
  CHECK(stats.at("files_committed_together") >= kFiles / 4);
  m.remount();  // everything must be stored: the unmount reports nothing pending
  for (int i = 0; i < kFiles; ++i) {
    const std::string body = "file " + std::to_string(i) + std::string(100 + i, 'x');
    CHECK(read_file(m / ("many/f" + std::to_string(i))) == body);
  }
}

TEST_CASE("mount: a system logger that reads nothing does not stop the mount", "[mount][log]") {
  // A logger that reads nothing, its queue filled: a blocking syslog() would wait for ever.
  SyslogListener logger(SyslogListener::Deaf{});
  if (!listening(logger))
    return;
  REQUIRE(logger.fill() > 0);
  Mount m;
  {
    std::ofstream out(m / "note");
    out << "written while the logger is stuck";
  }
  CHECK(read_file(m / "note") == "written while the logger is stuck");
  CHECK(m.stats().at("syslog_dropped") > 0);
  m.remount();  // the unmount logs too, and must finish
  CHECK(read_file(m / "note") == "written while the logger is stuck");
  // Every line is still in the mount's own log.
  CHECK(read_file(m.home / "mount.log").find("mounted " + m.mountpoint.string()) !=
        std::string::npos);
}
