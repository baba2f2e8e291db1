// The system log's line format: what syslog(3) sends (RFC 3164), so that any logger parses it.
#include <syslog.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <ctime>

#include "fs/syslog.hpp"

using splitfs::fs::format_syslog_line;

namespace {

// 2026-11-05 07:08:09 UTC and 2026-12-25 23:59:00 UTC.
constexpr std::time_t kEarly = 1'793'862'489;
constexpr std::time_t kLate = 1'798'243'140;

struct Utc {
  Utc() {
    ::setenv("TZ", "UTC", 1);
    ::tzset();
  }
};

}  // namespace

TEST_CASE("syslog lines: priority, a space-padded day, ident and pid", "[syslog]") {
  const Utc utc;
  CHECK(format_syslog_line(LOG_DAEMON | LOG_INFO, kEarly, "splitfs-mount", 42, "mounted /mnt") ==
        "<30>Nov  5 07:08:09 splitfs-mount[42]: mounted /mnt");
  CHECK(format_syslog_line(LOG_USER | LOG_ERR, kLate, "x", 7, "") == "<11>Dec 25 23:59:00 x[7]: ");
}

TEST_CASE("syslog lines: the text goes as it is", "[syslog]") {
  const Utc utc;
  const std::string text = "a line with % signs %s %n and\ttabs";
  const std::string line = format_syslog_line(LOG_DAEMON | LOG_INFO, kEarly, "id", 1, text);
  CHECK(line.substr(line.size() - text.size()) == text);
}
