#include "tests/support/servers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <regex>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <utility>

#include "tls/identity.hpp"

namespace splitfs::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kRestartAttempts = 5;
constexpr auto kRestartPause = std::chrono::milliseconds(200);
constexpr std::size_t kMaxLineBytes = 4096;
constexpr auto kCommandDeadline = std::chrono::seconds(20);
constexpr std::size_t kMaxCommandOutput = 1 << 20;

std::string errno_text() {
  return std::generic_category().message(errno);
}

int decode_status(int status) {
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

// Execs `args` with stdout (and stderr when `with_stderr`) into the write end of a pipe; the
// child dies with the test. Returns the child's pid and the read end.
std::pair<pid_t, int> spawn(std::vector<std::string> args, bool with_stderr) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe failed: " + errno_text());
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error("fork failed: " + errno_text());
  }
  if (pid == 0) {
    // Only async-signal-safe calls between fork and exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    if (::dup2(fds[1], STDOUT_FILENO) < 0)
      ::_exit(127);
    if (with_stderr && ::dup2(fds[1], STDERR_FILENO) < 0)
      ::_exit(127);
    ::syscall(SYS_close_range, 3U, ~0U, 0U);  // no test sockets or pipes leak into the server
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

std::string binary_path(std::string binary) {
  return binary.find('/') == std::string::npos ? bin_dir() + "/" + binary : std::move(binary);
}

// NAME=VALUE lines of an env file the engine scripts wrote.
std::map<std::string, std::string> read_env_file(const fs::path& path) {
  std::ifstream in(path);
  if (!in)
    throw std::runtime_error("cannot read " + path.string() + " (are the engines up?)");
  std::map<std::string, std::string> values;
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos)
      values[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return values;
}

std::string random_name() {
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard lock(mutex);
  static const char* const digits = "0123456789abcdef";
  std::string name = "t";
  for (int i = 0; i < 16; ++i)
    name.push_back(digits[rng() % 16]);
  return name;
}

}  // namespace

const Engines& test_engines() {
  static const Engines engines = [] {
    const char* dir = std::getenv("SPLITFS_TEST_ENGINES");
    if (dir == nullptr || *dir == '\0')
      throw std::runtime_error(
          "SPLITFS_TEST_ENGINES is not set: run this test through ctest, whose fixture starts "
          "Swift and PostgreSQL (scripts/swift-up.sh, scripts/pg-up.sh)");
    auto swift = read_env_file(fs::path(dir) / "swift" / "env");
    auto pg = read_env_file(fs::path(dir) / "pg" / "env");
    Engines e;
    e.s3_endpoint = swift["SWIFT_S3_ENDPOINT"];
    e.ca_file = swift["SWIFT_CA_FILE"];
    e.pg_url = pg["SPLITFS_PG_URL"];
    if (e.s3_endpoint.empty() || e.pg_url.empty())
      throw std::runtime_error(std::string("incomplete engine env files in ") + dir);
    ::setenv("AWS_ACCESS_KEY_ID", swift["AWS_ACCESS_KEY_ID"].c_str(), 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", swift["AWS_SECRET_ACCESS_KEY"].c_str(), 1);
    ::setenv("PGPASSFILE", pg["PGPASSFILE"].c_str(), 1);
    return e;
  }();
  return engines;
}

std::vector<std::string> shared_store_args(const Engines& engines) {
  const std::string name = random_name();
  return {"--backend",
          "s3://" + name + "?endpoint=" + engines.s3_endpoint + "&ca=" + engines.ca_file, "--index",
          engines.pg_url + "?schema=" + name};
}

bool s3_backend_requested() {
  const char* backend = std::getenv("SPLITFS_TEST_BACKEND");
  return backend != nullptr && std::string_view(backend) == "s3";
}

std::string test_client_fingerprint() {
  // Lives as long as the test process; removed at exit.
  static const TempDir folder("splitfs-test-client");
  static std::once_flag once;
  static std::string fingerprint;
  std::call_once(once, [] {
    fingerprint = tls::load_or_create_client_identity(folder.path() / "identity").fingerprint;
    ::setenv(tls::kIdentityEnvironment, (folder.path() / "identity").c_str(), 1);
  });
  return fingerprint;
}

CommandResult run_server_command(const std::string& binary, const fs::path& data_dir,
                                 const std::vector<std::string>& args) {
  std::vector<std::string> argv{binary_path(binary), "--data", data_dir.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string what;
  for (const auto& arg : argv)
    what += (what.empty() ? "" : " ") + arg;
  auto [pid, fd] = spawn(std::move(argv), true);
  CommandResult result;
  const auto deadline = Clock::now() + kCommandDeadline;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0)
      break;
    pollfd pfd{fd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready <= 0)
      break;
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    if (result.output.size() < kMaxCommandOutput)
      result.output.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    throw std::runtime_error(what + " did not finish within " +
                             std::to_string(kCommandDeadline.count()) + " s");
  }
  result.status = decode_status(status);
  return result;
}

ServerProcess::ServerProcess(std::string binary, fs::path data_dir,
                             std::vector<std::string> extra_args, Enrol enrol)
    : binary_(binary_path(std::move(binary))),
      data_dir_(std::move(data_dir)),
      extra_args_(std::move(extra_args)) {
  if (s3_backend_requested() &&
      std::find(extra_args_.begin(), extra_args_.end(), "--backend") == extra_args_.end()) {
    const auto shared = shared_store_args(test_engines());
    extra_args_.insert(extra_args_.end(), shared.begin(), shared.end());
  }
  if (enrol == Enrol::test_client) {
    const CommandResult added = command({"users", "add", kTestUser, test_client_fingerprint()});
    if (added.status != 0)
      throw std::runtime_error(binary_ + " could not enrol the test client: " + added.output);
  }
  if (!start(0))
    throw std::runtime_error(binary_ + " exited before listening");
}

ServerProcess::~ServerProcess() {
  stop();
}

bool ServerProcess::start(std::uint16_t port) {
  std::vector<std::string> args{binary_, "--data", data_dir_.string(), "--port",
                                std::to_string(port)};
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  const auto [pid, fd] = spawn(std::move(args), false);
  pid_ = pid;
  stdout_fd_ = fd;

  // Read the listening line, byte by byte so nothing after it is consumed.
  std::string line;
  const auto deadline = Clock::now() + kStartDeadline;
  bool complete = false;
  while (!complete) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      kill(SIGKILL);
      throw std::runtime_error(binary_ + " did not print its listening line within " +
                               std::to_string(kStartDeadline.count()) + " s");
    }
    pollfd pfd{stdout_fd_, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready < 0)
      throw std::runtime_error("poll failed: " + errno_text());
    if (ready == 0)
      continue;
    char c = 0;
    ssize_t n = ::read(stdout_fd_, &c, 1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      // End of output: the server gave up (its reason went to stderr).
      wait_for_exit(kStopDeadline);
      return false;
    }
    if (c == '\n') {
      complete = true;
    } else if (line.size() < kMaxLineBytes) {
      line.push_back(c);
    }
  }

  static const std::regex kLine(
      R"(^listening on (\[[0-9a-fA-F:.]+\]|[^ :\[\]]+):([0-9]{1,5}) fingerprint (SHA256:[0-9a-f]{64})$)");
  std::smatch match;
  if (!std::regex_match(line, match, kLine)) {
    kill(SIGKILL);
    throw std::runtime_error(binary_ + " printed an unexpected line: " + line);
  }
  host_ = match[1].str();
  if (host_.front() == '[')
    host_ = host_.substr(1, host_.size() - 2);
  port_ = static_cast<std::uint16_t>(std::stoul(match[2].str()));
  fingerprint_ = match[3].str();
  line_ = line;
  return true;
}

int ServerProcess::wait_for_exit(Clock::duration deadline) {
  if (pid_ <= 0)
    return -1;
  const auto until = Clock::now() + deadline;
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (done == 0) {
    ::kill(pid_, SIGKILL);
    done = ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
  if (stdout_fd_ >= 0) {
    ::close(stdout_fd_);
    stdout_fd_ = -1;
  }
  return done > 0 ? decode_status(status) : -1;
}

void ServerProcess::kill(int sig) {
  if (pid_ <= 0)
    return;
  ::kill(pid_, sig);
  wait_for_exit(kStopDeadline);
}

void ServerProcess::signal(int sig) {
  if (pid_ > 0)
    ::kill(pid_, sig);
}

int ServerProcess::stop() {
  if (pid_ <= 0)
    return -1;
  ::kill(pid_, SIGCONT);  // a stopped process would never see the SIGTERM
  ::kill(pid_, SIGTERM);
  return wait_for_exit(kStopDeadline);
}

void ServerProcess::restart() {
  const std::uint16_t previous = port_;
  stop();
  for (int attempt = 0; attempt < kRestartAttempts; ++attempt) {
    if (start(previous))
      return;
    std::this_thread::sleep_for(kRestartPause);
  }
  if (!start(0))
    throw std::runtime_error(binary_ + " did not restart");
}

InitOptions pinned_options(const ServerProcess& https, const ServerProcess& tcp) {
  InitOptions options;
  options.https = https.address();
  options.tcp = tcp.address();
  options.https_fingerprint = https.fingerprint();
  options.tcp_fingerprint = tcp.fingerprint();
  return options;
}

TestServers::TestServers(const std::vector<std::string>& extra_args, Enrol enrol)
    : root("splitfs-servers"),
      https("splitfs-https-server", root / "https", extra_args, enrol),
      tcp("splitfs-tcp-server", root / "tcp", extra_args, enrol) {}

}  // namespace splitfs::testing
