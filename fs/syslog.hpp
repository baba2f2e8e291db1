// The mount's lines for the system log, sent so that a logger that does not keep up never stops
// the mount: syslog(3) blocks while the logger's queue is full, and a FUSE process blocked there
// hangs every access to its mount. Here each line is one datagram to /dev/log sent without
// waiting; a line the queue has no room for is dropped and counted (the mount's own log file
// keeps every line).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <string>
#include <string_view>

#include "common/fd.hpp"

namespace splitfs::fs {

// A line as syslog(3) sends it (RFC 3164): "<PRI>Mmm dd hh:mm:ss IDENT[PID]: TEXT", the time
// in local time.
std::string format_syslog_line(int priority, std::time_t when, std::string_view ident, int pid,
                               std::string_view text);

class SystemLog {
 public:
  explicit SystemLog(std::string ident, std::filesystem::path socket = "/dev/log");

  // At priority LOG_DAEMON | LOG_INFO. Never waits: without a logger, or with its queue full, the
  // line is dropped.
  void send(std::string_view text) noexcept;
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  bool connect_locked();

  std::string ident_;
  std::filesystem::path socket_;
  std::mutex mutex_;
  Fd fd_;
  std::chrono::steady_clock::time_point retry_at_{};  // no new connect before this
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace splitfs::fs
