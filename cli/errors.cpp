#include "cli/errors.hpp"

#include <ctime>
#include <iostream>
#include <splitfs/errors.hpp>
#include <string_view>

namespace splitfs::cli {

int exit_code(const std::exception& e) {
  if (dynamic_cast<const splitfs::NotFound*>(&e))
    return kNotFound;
  if (dynamic_cast<const splitfs::IntegrityError*>(&e))
    return kIntegrity;
  if (dynamic_cast<const splitfs::ServerUnavailable*>(&e))
    return kUnavailable;
  if (dynamic_cast<const splitfs::AuthError*>(&e))
    return kAuth;
  if (dynamic_cast<const splitfs::ConfigError*>(&e))
    return kConfig;
  if (dynamic_cast<const splitfs::ConflictError*>(&e))
    return kConflict;
  if (dynamic_cast<const splitfs::QuotaExceeded*>(&e))
    return kQuota;
  if (dynamic_cast<const splitfs::MaliciousFileError*>(&e))
    return kMalicious;
  return kFailure;
}

// The library's message, with what to do next where the message alone does not say it.
std::string explain(const std::exception& e) {
  std::string text = e.what();
  const auto has = [&text](std::string_view part) { return text.find(part) != std::string::npos; };
  switch (exit_code(e)) {
    case kUnavailable:
      return text + "\n  `splitfs status` shows whether each server answers, and at which address";
    case kAuth:
      if (has(" is pinned")) {
        return "the server's TLS identity changed: " + text +
               "\n  if its operator did not re-create that server, do not trust it: the "
               "connection may be intercepted. Compare the fingerprint with the one the server "
               "prints when it starts, then pin it with `splitfs init --force ...`";
      }
      if ((has("not enrolled") || has("refused")) && !has("splitfs id"))
        return text +
               "\n  `splitfs id` prints this client's fingerprint, for the operator to enrol";
      return text;
    case kQuota:
      return text +
             "\n  `splitfs df` shows what your files take; remove some (`splitfs rm`), or ask "
             "the server's operator for more room";
    case kConfig:
      if (has("config.toml") && !has("splitfs init"))
        return text + "\n  `splitfs config show` shows the settings in effect";
      return text;
    default:
      return text;
  }
}

int report_error(const std::string& prefix, const std::exception& e) {
  std::cerr << "splitfs: " << prefix << explain(e) << "\n";
  return exit_code(e);
}

std::string local_time(std::int64_t ns) {
  const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

int report(const std::string& what, int code) {
  std::cerr << "splitfs: " << what << "\n";
  return code;
}

std::string iso_time(std::int64_t ns) {
  const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace splitfs::cli
