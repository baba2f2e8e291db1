// Real server processes for integration tests: start a built server binary on a free port in a
// scratch data folder, learn its port and fingerprint from its listening line, and always stop it
// (SIGTERM, then SIGKILL after a deadline) when the test is done. A server also dies with the
// thread that started it, so a crashed test leaves no server behind.
//
// Servers admit enrolled clients only. Unless told otherwise, every server a test starts has the
// test client enrolled (as user "local"): one identity per test process, which every client in the
// process presents because $SPLITFS_IDENTITY names it (tls/identity.hpp), the splitfs library and
// CLI subprocesses included. Tests of authentication pass Enrol::none and give each client an
// identity of its own.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <splitfs/client.hpp>
#include <string>
#include <vector>

#include "tests/support/temp_dir.hpp"

namespace splitfs::testing {

enum class Enrol { test_client, none };

// The user name the test client is enrolled as.
inline constexpr const char* kTestUser = "local";

// The folder of the built programs and the source tree, fixed when the tests were built. They are
// compiled into build_paths.cpp alone: a path in a compile command makes every checkout compile
// that file afresh, where the compile cache could have served it.
const std::string& bin_dir();
const std::string& source_dir();

// The test process's client identity folder (key.pem, cert.pem), created on first use, when
// $SPLITFS_IDENTITY is also set to it. Returns its fingerprint.
std::string test_client_fingerprint();

// What a server's operator command printed and returned.
struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr together
};
// Runs `binary --data data_dir args...` (e.g. users add NAME FPR) to its end, within a deadline.
CommandResult run_server_command(const std::string& binary, const std::filesystem::path& data_dir,
                                 const std::vector<std::string>& args);

// A fresh folder under /tmp, removed with its content on destruction.
// One running server. Throws std::runtime_error when the server does not come up.
class ServerProcess {
 public:
  static constexpr std::chrono::seconds kStartDeadline{20};
  static constexpr std::chrono::seconds kStopDeadline{10};

  // `binary` is a file name in bin_dir() (e.g. "splitfs-tcp-server") or a path with a '/'.
  // Enrols the test client (unless Enrol::none), then runs
  // `binary --data data_dir --port 0 extra_args...` and waits for its listening line.
  ServerProcess(std::string binary, std::filesystem::path data_dir,
                std::vector<std::string> extra_args = {}, Enrol enrol = Enrol::test_client);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // Sends `signal` and waits for the process to end (SIGKILL after kStopDeadline).
  void kill(int signal = SIGKILL);
  // Sends `signal` without waiting, e.g. SIGSTOP or SIGCONT.
  void signal(int signal);
  // SIGTERM and wait; returns the exit status (128 + signal number if killed), or -1 if the
  // server was not running.
  int stop();
  // Starts the server again with the same data folder, on the same port when it is free.
  void restart();
  bool running() const { return pid_ > 0; }

  pid_t pid() const { return pid_; }
  const std::string& host() const { return host_; }
  std::uint16_t port() const { return port_; }
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }
  const std::string& binary() const { return binary_; }
  // An operator command on this server's data folder (see run_server_command).
  CommandResult command(const std::vector<std::string>& args) const {
    return run_server_command(binary_, data_dir_, args);
  }
  // The listening line as printed.
  const std::string& listening_line() const { return line_; }

 private:
  // Starts on `port`; false if the process exited before listening (e.g. the port was taken).
  bool start(std::uint16_t port);
  int wait_for_exit(std::chrono::steady_clock::duration deadline);

  std::string binary_;
  std::filesystem::path data_dir_;
  std::vector<std::string> extra_args_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string host_;
  std::uint16_t port_ = 0;
  std::string fingerprint_;
  std::string line_;
};

// The shared-store engines a ctest run started once for the tests of label s3 (a Swift with s3api
// and a PostgreSQL, scripts/swift-up.sh and pg-up.sh): their folder is $SPLITFS_TEST_ENGINES.
struct Engines {
  std::string s3_endpoint;  // https://127.0.0.1:PORT
  std::string ca_file;
  std::string pg_url;  // postgresql://splitfs@127.0.0.1:PORT/splitfs (password in $PGPASSFILE)
};
// Reads the engines' env files and exports their credentials (AWS_*, PGPASSFILE) to this process
// and the servers it starts. Throws when $SPLITFS_TEST_ENGINES is unset or unreadable.
const Engines& test_engines();
// --backend and --index for a new, empty shared store (a fresh bucket and index schema).
std::vector<std::string> shared_store_args(const Engines& engines);
// True when $SPLITFS_TEST_BACKEND is "s3": every server a test starts without --backend of its
// own keeps its store on the engines, each in a fresh bucket and schema.
bool s3_backend_requested();

// What `splitfs init` is told for a client of these two servers, each pinned by its fingerprint.
InitOptions pinned_options(const ServerProcess& https, const ServerProcess& tcp);

// An HTTPS and a TCP server side by side in one scratch folder (root/https and root/tcp).
struct TestServers {
  explicit TestServers(const std::vector<std::string>& extra_args = {},
                       Enrol enrol = Enrol::test_client);

  TempDir root;
  ServerProcess https;
  ServerProcess tcp;
};

}  // namespace splitfs::testing
