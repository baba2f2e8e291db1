#include "store/maintenance.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <random>
#include <sstream>

#include "store/inspect.hpp"
#include "store/pack.hpp"
#include "store/sqlite.hpp"

namespace splitfs::store {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRequestFile = "COMPACT";
// How often the background compactor looks for an operator's request.
constexpr auto kRequestPoll = std::chrono::milliseconds(250);
// How often a requesting command looks for the report.
constexpr auto kReportPoll = std::chrono::milliseconds(200);
// A request file is a token and a number: anything longer is not ours.
constexpr std::size_t kMaxRequestBytes = 128;
// A request's grace period is at most a year.
constexpr std::int64_t kMaxGraceSeconds = 366LL * 24 * 3600;

std::error_code errno_code() {
  return {errno, std::system_category()};
}

// A read-only connection to the index of the store in `dir`.
std::error_code open_index(const fs::path& dir, sql::Db& db) {
  std::string error;
  if (sql::open((dir / detail::kIndexFile).string(), SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, db,
                error) != SQLITE_OK) {
    std::fprintf(stderr, "splitfs store: cannot open the index: %s\n", error.c_str());
    return Errc::io;
  }
  return {};
}

std::string random_token() {
  std::random_device device;
  char text[33];
  std::snprintf(text, sizeof text, "%08x%08x%08x%08x", device(), device(), device(), device());
  return text;
}

struct Request {
  std::string token;
  std::optional<std::chrono::seconds> grace;
};

// "TOKEN GRACE" or "TOKEN -" (the server's own grace period).
std::optional<Request> parse_request(const std::string& text) {
  std::istringstream in(text);
  Request request;
  std::string grace;
  if (!(in >> request.token >> grace) || request.token.size() > 64)
    return std::nullopt;
  for (char c : request.token) {
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      return std::nullopt;
  }
  if (grace != "-") {
    std::int64_t seconds = 0;
    for (char c : grace) {
      if (c < '0' || c > '9' || seconds > kMaxGraceSeconds)
        return std::nullopt;
      seconds = seconds * 10 + (c - '0');
    }
    if (grace.empty() || seconds > kMaxGraceSeconds)
      return std::nullopt;
    request.grace = std::chrono::seconds(seconds);
  }
  return request;
}

// Takes the pending request, if any: reads and removes DIR/COMPACT.
std::optional<Request> take_request(const fs::path& dir) {
  const fs::path path = dir / kRequestFile;
  pack::Fd fd;
  if (pack::open_file(path, O_RDONLY | O_NOFOLLOW, 0, fd))
    return std::nullopt;
  char buffer[kMaxRequestBytes];
  const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
  ::unlink(path.c_str());
  if (n <= 0)
    return std::nullopt;
  return parse_request(std::string(buffer, static_cast<std::size_t>(n)));
}

std::string seconds_text(std::int64_t seconds) {
  if (seconds % 3600 == 0 && seconds > 0)
    return std::to_string(seconds / 3600) + " h";
  if (seconds % 60 == 0 && seconds > 0)
    return std::to_string(seconds / 60) + " min";
  return std::to_string(seconds) + " s";
}

std::string time_text(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

std::string ratio_text(double ratio) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2fx", ratio);
  return text;
}

// "  label      value\n" with the labels in one column.
void line(std::string& out, std::string_view label, const std::string& value) {
  std::string row = "  ";
  row += label;
  row.resize(std::max<std::size_t>(row.size() + 1, 24), ' ');
  out += row + value + "\n";
}

std::string bytes_text(std::uint64_t bytes) {
  return std::to_string(bytes) + " (" + human_bytes(bytes) + ")";
}

}  // namespace

BackgroundCompactor::BackgroundCompactor(Store& store, fs::path dir, std::chrono::seconds interval,
                                         std::function<void(std::string_view)> log)
    : store_(store), dir_(std::move(dir)), interval_(interval), log_(std::move(log)) {
  thread_ = std::thread([this] { run(); });
}

BackgroundCompactor::~BackgroundCompactor() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void BackgroundCompactor::run() {
  using Clock = std::chrono::steady_clock;
  auto next = Clock::now() + interval_;
  std::unique_lock lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, kRequestPoll, [this] { return stop_.load(); });
    if (stop_)
      return;
    lock.unlock();
    if (std::optional<Request> request = take_request(dir_)) {
      compact({request->grace, request->token, &stop_});
    } else if (interval_.count() > 0 && Clock::now() >= next) {
      compact({std::nullopt, "periodic", &stop_});
      next = Clock::now() + interval_;
    }
    lock.lock();
  }
}

void BackgroundCompactor::compact(const CompactOptions& options) {
  CompactionReport report;
  if (const std::error_code ec = store_.compact(options, report)) {
    log_("compaction failed: " + ec.message());
    return;
  }
  if (report.garbage_shares > 0 || report.packs_deleted > 0 || options.trigger != "periodic") {
    log_("compaction (" + options.trigger + "): " + summary(report));
  }
}

bool in_use(const fs::path& dir) {
  pack::Fd fd;
  if (pack::open_file(dir / detail::kLockFile, O_RDWR, 0, fd))
    return false;
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0)
    return false;  // closing the descriptor releases it again
  return errno == EWOULDBLOCK;
}

std::error_code inspect_stats(const fs::path& dir, StoreStats& out) {
  sql::Db db;
  if (auto ec = open_index(dir, db))
    return ec;
  return detail::collect_stats(db.get(), dir, out);
}

std::error_code inspect_check(const fs::path& dir, CheckReport& out, std::chrono::seconds wait) {
  out = {};
  const auto lock = detail::MaintenanceLock::acquire(dir, false, wait);
  if (!lock)
    return Errc::busy;
  sql::Db db;
  if (auto ec = open_index(dir, db))
    return ec;
  return detail::run_check(db.get(), dir, out);
}

std::error_code request_compaction(const fs::path& dir, std::optional<std::chrono::seconds> grace,
                                   std::chrono::seconds wait, CompactionReport& out) {
  const std::string token = random_token();
  const std::string text = token + " " + (grace ? std::to_string(grace->count()) : "-") + "\n";
  const fs::path tmp = dir / (std::string(kRequestFile) + "." + token);
  {
    pack::Fd fd;
    if (auto ec = pack::open_file(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600, fd))
      return ec;
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
      const std::error_code ec = errno_code();
      ::unlink(tmp.c_str());
      return ec;
    }
  }
  if (::rename(tmp.c_str(), (dir / kRequestFile).c_str()) != 0) {
    const std::error_code ec = errno_code();
    ::unlink(tmp.c_str());
    return ec;
  }
  sql::Db db;
  if (auto ec = open_index(dir, db))
    return ec;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::optional<CompactionReport> report = detail::last_compaction(db.get(), token)) {
      out = *report;
      return {};
    }
    std::this_thread::sleep_for(kReportPoll);
  }
  return Errc::busy;
}

std::string human_bytes(std::uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

std::string summary(const CompactionReport& r) {
  return "dropped " + std::to_string(r.garbage_shares) + " unreferenced shares (" +
         human_bytes(r.garbage_bytes) + "), rewrote " + std::to_string(r.packs_rewritten) +
         " packs (" + human_bytes(r.bytes_moved) + " copied), deleted " +
         std::to_string(r.packs_deleted) + " packs; disk " + human_bytes(r.disk_bytes_before) +
         " -> " + human_bytes(r.disk_bytes_after) + " in " + seconds_text(r.finished - r.started);
}

std::string describe(const CompactionReport& r) {
  std::string out;
  line(out, "grace period", seconds_text(r.grace_seconds));
  line(out, "unreferenced dropped",
       std::to_string(r.garbage_shares) + " shares, " + bytes_text(r.garbage_bytes));
  line(out, "packs rewritten",
       std::to_string(r.packs_rewritten) + " (" + std::to_string(r.records_moved) + " records, " +
           bytes_text(r.bytes_moved) + " copied)");
  line(out, "packs deleted", std::to_string(r.packs_deleted));
  line(out, "disk before", bytes_text(r.disk_bytes_before));
  line(out, "disk after", bytes_text(r.disk_bytes_after));
  line(out, "took", seconds_text(r.finished - r.started));
  return out;
}

std::string describe(const StoreStats& s) {
  const Usage& u = s.total;
  std::string out;
  line(out, "users", std::to_string(s.users));
  line(out, "files", std::to_string(u.files));
  line(out, "logical bytes", bytes_text(u.logical_bytes));
  line(out, "referenced bytes", bytes_text(u.referenced_bytes));
  line(out, "shares", std::to_string(u.shares));
  line(out, "share bytes",
       bytes_text(u.share_bytes) + " stored, " + bytes_text(u.share_logical_bytes) +
           " before compression");
  line(out, "unreferenced",
       std::to_string(u.garbage_shares) + " shares, " + bytes_text(u.garbage_bytes));
  line(out, "dedup ratio", ratio_text(u.dedup_ratio()));
  line(out, "compression ratio", ratio_text(u.compression_ratio()));
  line(out, "packs",
       std::to_string(s.packs) + " files, " + bytes_text(s.pack_bytes) + " (" +
           bytes_text(s.live_pack_bytes) + " indexed)");
  line(out, "index", bytes_text(s.index_bytes));
  line(out, "bytes on disk", bytes_text(s.disk_bytes()));
  if (s.last_compaction) {
    line(out, "last compaction",
         time_text(s.last_compaction->finished) + " (" + s.last_compaction->trigger + "), " +
             human_bytes(s.last_compaction->disk_bytes_before) + " -> " +
             human_bytes(s.last_compaction->disk_bytes_after));
  } else {
    line(out, "last compaction", "none yet");
  }
  return out;
}

std::string describe(const CheckReport& r) {
  std::string out;
  line(out, "users", std::to_string(r.users));
  line(out, "files", std::to_string(r.files));
  line(out, "shares", std::to_string(r.shares));
  line(out, "packs", std::to_string(r.packs));
  line(out, "bytes verified", bytes_text(r.bytes_verified));
  for (const std::string& note : r.notes)
    out += "  note: " + note + "\n";
  for (const std::string& problem : r.problems)
    out += "  PROBLEM: " + problem + "\n";
  if (r.problem_count > r.problems.size()) {
    out += "  ... and " + std::to_string(r.problem_count - r.problems.size()) + " more problems\n";
  }
  out += r.ok() ? "  consistent\n" : "  " + std::to_string(r.problem_count) + " problems found\n";
  return out;
}

}  // namespace splitfs::store
