#include "fs/syslog.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace splitfs::fs {

namespace {

// After a failed connect (no logger), the next attempt waits this long.
constexpr auto kReconnectDelay = std::chrono::seconds(1);

}  // namespace

std::string format_syslog_line(int priority, std::time_t when, std::string_view ident, int pid,
                               std::string_view text) {
  std::tm tm{};
  localtime_r(&when, &tm);
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "<%d>%s %2d %02d:%02d:%02d ", priority,
                kMonths[static_cast<unsigned>(tm.tm_mon) % 12], tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  std::string line(stamp);
  line.append(ident);
  line += '[';
  line += std::to_string(pid);
  line += "]: ";
  line.append(text);
  return line;
}

SystemLog::SystemLog(std::string ident, std::filesystem::path socket)
    : ident_(std::move(ident)), socket_(std::move(socket)) {}

bool SystemLog::connect_locked() {
  const auto now = std::chrono::steady_clock::now();
  if (now < retry_at_)
    return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = socket_.string();
  if (path.size() >= sizeof addr.sun_path)
    return false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    retry_at_ = now + kReconnectDelay;
    return false;
  }
  fd_ = std::move(fd);
  return true;
}

void SystemLog::send(std::string_view text) noexcept {
  try {
    const std::string line =
        format_syslog_line(LOG_DAEMON | LOG_INFO, std::time(nullptr), ident_, ::getpid(), text);
    std::lock_guard lock(mutex_);
    // Twice at most: a logger that restarted left the old connection refused.
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!fd_ && !connect_locked())
        break;
      if (::send(fd_.get(), line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
        return;
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
        break;  // the logger's queue is full: this line goes
      fd_.reset();
    }
  } catch (...) {
    // Out of memory for the line: it goes too.
  }
  dropped_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace splitfs::fs
