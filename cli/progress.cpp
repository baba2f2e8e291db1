#include "cli/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace splitfs::cli {

namespace {

constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
// The rate is taken over this much recent history, so it follows a link that speeds up or slows.
constexpr auto kRateWindow = std::chrono::seconds(3);
constexpr std::size_t kDefaultColumns = 80;
constexpr std::size_t kMinNameColumns = 12;

double seconds_between(Progress::Clock::time_point a, Progress::Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::size_t terminal_columns() {
  winsize size{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
    return size.ws_col;
  return kDefaultColumns;
}

// The name cut at the front to fit `width` columns, keeping its end (the file name).
std::string fit(const std::string& name, std::size_t width) {
  if (name.size() <= width)
    return name;
  if (width <= 3)
    return name.substr(name.size() - width);
  return "..." + name.substr(name.size() - (width - 3));
}

std::string elapsed_text(double seconds) {
  if (seconds >= 60)
    return human_duration(seconds);
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", seconds);
  return text;
}

std::string rate_text(double bytes_per_second) {
  return human_size(static_cast<std::uint64_t>(bytes_per_second)) + "/s";
}

}  // namespace

std::string human_size(std::uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

std::string human_duration(double seconds) {
  if (seconds < 0 || seconds > 99 * 3600.0)
    return "--:--";
  const auto total = static_cast<long>(seconds + 0.5);
  char text[32];
  if (total >= 3600) {
    std::snprintf(text, sizeof text, "%ld:%02ld:%02ld", total / 3600, total / 60 % 60, total % 60);
  } else {
    std::snprintf(text, sizeof text, "%ld:%02ld", total / 60, total % 60);
  }
  return text;
}

Progress::Progress(bool enabled, std::size_t items) : enabled_(enabled), items_(items) {}

Progress::~Progress() {
  if (drawn_)
    std::fputs("\r\033[K", stderr);
}

bool Progress::on_terminal() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) == 1 && ::isatty(STDERR_FILENO) == 1 &&
         !(term && std::strcmp(term, "dumb") == 0);
}

ProgressHandler Progress::begin(const std::string& label, std::uint64_t size) {
  ++index_;
  label_ = label;
  current_ = {label, 0, size, 0};
  item_start_ = Clock::now();
  samples_.clear();
  samples_.emplace_back(item_start_, 0);
  if (!enabled_)
    return {};
  draw(true);
  return [this](const TransferProgress& p) { update(p); };
}

void Progress::update(const TransferProgress& p) {
  current_ = p;
  const auto now = Clock::now();
  samples_.emplace_back(now, p.bytes_done - p.bytes_resumed);
  while (samples_.size() > 2 && now - samples_.front().first > kRateWindow)
    samples_.pop_front();
  draw(p.bytes_done >= p.bytes_total);
}

void Progress::draw(bool force) {
  const auto now = Clock::now();
  if (!force && drawn_ && now - last_draw_ < kRedrawInterval)
    return;
  last_draw_ = now;
  std::string counts;
  if (items_ > 1)
    counts.append("[")
        .append(std::to_string(index_))
        .append("/")
        .append(std::to_string(items_))
        .append("] ");
  std::string detail =
      "  " + human_size(current_.bytes_done) + " / " +
      (current_.bytes_total > 0 || current_.bytes_done > 0 ? human_size(current_.bytes_total)
                                                           : std::string("?"));
  if (current_.bytes_total > 0) {
    detail += "  " + std::to_string(current_.bytes_done * 100 / current_.bytes_total) + "%";
  }
  double rate = 0;
  if (samples_.size() >= 2) {
    const double span = seconds_between(samples_.front().first, samples_.back().first);
    if (span > 0)
      rate = static_cast<double>(samples_.back().second - samples_.front().second) / span;
  }
  if (rate > 0) {
    detail +=
        "  " + rate_text(rate) + "  ETA " +
        human_duration(static_cast<double>(current_.bytes_total - current_.bytes_done) / rate);
  } else {
    detail += "  --/s  ETA --:--";
  }
  const std::size_t columns = terminal_columns();
  const std::size_t fixed = counts.size() + detail.size() + 1;
  const std::size_t name_width =
      columns > fixed + kMinNameColumns ? columns - fixed : kMinNameColumns;
  const std::string line = counts + fit(label_, name_width) + detail;
  std::fprintf(stderr, "\r\033[K%s", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::end(bool ok) {
  failed_ += ok ? 0 : 1;
  moved_total_ += current_.bytes_done - current_.bytes_resumed;
  bytes_total_ += current_.bytes_total;
  clear();
}

void Progress::clear() {
  if (!drawn_)
    return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  drawn_ = false;
}

void Progress::finish() {
  if (!enabled_ || index_ == 0)
    return;
  const double elapsed = seconds_between(command_start_, Clock::now());
  std::string line = "total: " + std::to_string(index_) + (index_ == 1 ? " file, " : " files, ") +
                     human_size(bytes_total_) + " in " + elapsed_text(elapsed);
  if (elapsed > 0)
    line += ", " + rate_text(static_cast<double>(moved_total_) / elapsed);
  if (failed_ > 0)
    line += ", " + std::to_string(failed_) + " failed";
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace splitfs::cli
