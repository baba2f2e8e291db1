// What the splitfs command prints and returns when something fails: the documented exit codes
// (docs/cli.md), each library error's code, and the library's message with what to do next where
// the message alone does not say it. Also the small formatting both halves of the command share.
#pragma once

#include <cstdint>
#include <exception>
#include <string>

namespace splitfs::cli {

// Exit codes, documented in docs/cli.md, the README and splitfs(1).
enum Exit : int {
  kOk = 0,
  kFailure = 1,
  kUsage = 2,
  kNotFound = 3,
  kIntegrity = 4,
  kUnavailable = 5,
  kAuth = 6,
  kConfig = 7,
  kConflict = 8,
  kQuota = 9,
  kMalicious = 10,
};

// The exit code for a library error (splitfs::Error subclasses; kFailure for anything else).
int exit_code(const std::exception& e);
// e's message, plus an indented line saying what to do where there is something to do.
std::string explain(const std::exception& e);
// Prints "splitfs: PREFIX<explain(e)>" on stderr; returns exit_code(e).
int report_error(const std::string& prefix, const std::exception& e);
// Prints "splitfs: WHAT" on stderr; returns code.
int report(const std::string& what, int code);

// "2026-11-24 22:03:01" in local time, and "2026-11-24T22:03:01Z" for JSON.
std::string local_time(std::int64_t ns);
std::string iso_time(std::int64_t ns);

}  // namespace splitfs::cli
