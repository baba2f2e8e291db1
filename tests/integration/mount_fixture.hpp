// A real mount for the mount tests: two test servers, a client home pinned to them, and
// `splitfs mount -f` running as a child process (more than one can share a store) (it dies with the
// test: SIGTERM on parent death makes it unmount). The destructor always unmounts (fusermount3 -u,
// then -uz as a last resort), so no test leaves a stale mount behind.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <splitfs/client.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fs/mounts.hpp"
#include "tests/support/servers.hpp"

namespace splitfs::testing {

// Runs a program to completion; its exit status (127 if it did not start).
inline int run_program(const std::vector<std::string>& args) {
  std::vector<char*> argv;  // built before fork: the child only execs
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Two test servers and a client home pinned to them, in one scratch folder.
struct Store {
  Store() {
    std::filesystem::permissions(dir.path(), std::filesystem::perms::owner_all |
                                                 std::filesystem::perms::group_exec |
                                                 std::filesystem::perms::others_exec);
    init(home, pinned_options(servers.https, servers.tcp));
  }
  TestServers servers;
  TempDir dir{"splitfs-mount"};
  std::filesystem::path home = dir.path() / "client";
};

class Mount {
 public:
  // options: the -o list for splitfs mount.
  explicit Mount(std::string options = "allow_other")
      : Mount(std::make_shared<Store>(), std::move(options)) {}
  // A second mount of another Mount's store.
  Mount(const Mount& other, std::string options) : Mount(other.store_, std::move(options)) {}

  ~Mount() {
    if (pid_ > 0)
      stop(false);
  }
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  std::filesystem::path operator/(const std::string& name) const { return mountpoint / name; }

  void mount() {
    const std::string binary = splitfs::testing::bin_dir() + "/splitfs";
    const std::string log = (dir.path() / (mountpoint.filename().string() + ".out")).string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(binary.c_str(), binary.c_str(), "--home", home.c_str(), "mount", "-f", "-o",
              options_.c_str(), mountpoint.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!std::filesystem::exists(mountpoint / ".splitfs" / "stats")) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL("splitfs mount exited early; see " << log);
      }
      if (std::chrono::steady_clock::now() > deadline)
        FAIL("the mount did not come up within 20 s; see " << log);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  // Unmounts and waits for the mount process; it must report everything stored.
  void unmount() { CHECK(stop(true) == 0); }

  void remount() {
    unmount();
    mount();
  }

  // Unmounts and returns the mount process's exit status, whatever it is.
  int unmount_status() { return stop(true); }

  // A crash: SIGKILL to the mount process, then the dead mount is detached (mount() again).
  void kill_process() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    run_program({"fusermount3", "-u", "-z", "-q", mountpoint.string()});
  }

  // The mount process, while mounted.
  pid_t pid() const { return pid_; }

  // The counters from /.splitfs/stats.
  std::map<std::string, std::uint64_t> stats() const {
    std::ifstream in(mountpoint / ".splitfs" / "stats");
    std::map<std::string, std::uint64_t> out;
    std::string key;
    std::string value;
    while (in >> key >> value) {
      key.pop_back();  // the colon
      try {
        out[key] = std::stoull(value);
      } catch (const std::exception&) {
      }
    }
    return out;
  }

 private:
  Mount(std::shared_ptr<Store> store, std::string options)
      : store_(std::move(store)),
        servers(store_->servers),
        dir(store_->dir),
        home(store_->home),
        mountpoint(next_mountpoint(dir.path())),
        options_(std::move(options)) {
    std::filesystem::create_directories(mountpoint);
    std::filesystem::permissions(mountpoint, std::filesystem::perms(0755));
    mount();
  }

  static std::filesystem::path next_mountpoint(const std::filesystem::path& dir) {
    for (int n = 1;; ++n) {
      auto path = dir / (n == 1 ? std::string("mnt") : "mnt" + std::to_string(n));
      if (!std::filesystem::exists(path))
        return path;
    }
  }

  std::shared_ptr<Store> store_;

 public:
  TestServers& servers;
  TempDir& dir;
  const std::filesystem::path home;
  const std::filesystem::path mountpoint;

 private:
  // Returns the mount process's exit status.
  int stop(bool strict) {
    for (int attempt = 0; attempt < 50 && splitfs::fs::is_mount_point(mountpoint); ++attempt) {
      if (run_program({"fusermount3", "-u", "-q", mountpoint.string()}) == 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (splitfs::fs::is_mount_point(mountpoint)) {
      if (strict)
        FAIL_CHECK("the mount stayed busy; detaching it lazily");
      run_program({"fusermount3", "-u", "-z", "-q", mountpoint.string()});
    }
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string options_;
  pid_t pid_ = -1;
};

}  // namespace splitfs::testing
