// The Scanner: runs its detectors over a file and the archive members inside it.
#include <algorithm>
#include <mutex>
#include <utility>

#include "scan/detectors.hpp"

namespace splitfs::scan {

Scanner::Scanner(const Settings& settings) : Scanner(settings, {}) {}

Scanner::Scanner(const Settings& settings, std::vector<std::unique_ptr<Detector>> extra)
    : settings_(settings) {
  if (settings_.heuristics)
    detectors_.push_back(detail::make_heuristics());
  if (settings_.bundled_yara_rules || !settings_.yara_rule_dirs.empty())
    detectors_.push_back(detail::make_yara(settings_));
  if (!settings_.clamav_database.empty())
    detectors_.push_back(detail::make_clamav(settings_));
  for (auto& d : extra)
    detectors_.push_back(std::move(d));
}

Scanner::~Scanner() = default;

std::shared_ptr<Scanner> Scanner::shared(const Settings& settings) {
  static std::mutex mutex;
  static std::vector<std::shared_ptr<Scanner>> scanners;
  std::lock_guard lock(mutex);
  for (const auto& s : scanners) {
    if (s->settings_ == settings)
      return s;
  }
  scanners.push_back(std::make_shared<Scanner>(settings));
  return scanners.back();
}

ScanAhead::ScanAhead() : parts_(std::make_unique<detail::AheadParts>()) {}
ScanAhead::ScanAhead(std::uint64_t from) : ScanAhead() {
  parts_->from = parts_->covered = from;
}
ScanAhead::~ScanAhead() = default;
ScanAhead::ScanAhead(ScanAhead&&) noexcept = default;
ScanAhead& ScanAhead::operator=(ScanAhead&&) noexcept = default;

std::uint64_t ScanAhead::covered() const {
  return parts_->covered;
}

bool ScanAhead::append(ScanAhead&& later) {
  detail::AheadParts& mine = *parts_;
  detail::AheadParts& theirs = *later.parts_;
  if (theirs.from != mine.covered || theirs.by == nullptr ||
      (mine.by != nullptr && mine.by != theirs.by)) {
    return false;
  }
  mine.by = theirs.by;
  mine.covered = theirs.covered;
  for (auto& part : theirs.parts)
    mine.parts.push_back(std::move(part));
  theirs.parts.clear();
  theirs.covered = theirs.from;
  return true;
}

void Detector::scan_part(Source&, std::uint64_t, detail::AheadParts&) {}

void Detector::scan_rest(const Item& item, const detail::AheadParts&, Verdict& verdict) {
  scan(item, verdict);
}

bool Scanner::scans_ahead() const {
  return std::any_of(detectors_.begin(), detectors_.end(),
                     [](const auto& d) { return d->takes_parts(); });
}

void Scanner::scan_ahead(Source& source, std::uint64_t end, ScanAhead& ahead) {
  for (const auto& d : detectors_) {
    if (d->takes_parts() && d->unavailable().empty() &&
        (ahead.parts_->by == nullptr || ahead.parts_->by == d.get())) {
      d->scan_part(source, end, *ahead.parts_);
      ahead.parts_->by = d.get();
      return;  // one detector takes parts (YARA); the others read the whole file at the end
    }
  }
}

bool Scanner::rereads_ahead(std::uint64_t size) {
  return std::any_of(detectors_.begin(), detectors_.end(), [size](const auto& d) {
    return !d->takes_parts() && d->reads_through(size) && d->unavailable().empty();
  });
}

Verdict Scanner::scan(Source& source, std::string_view name, const ScanAhead* ahead) {
  Verdict verdict;
  verdict.stats.bytes = source.size();
  std::vector<Detector*> ready;
  for (const auto& d : detectors_) {
    const std::string why = d->unavailable();
    if (why.empty())
      ready.push_back(d.get());
    else
      verdict.note(std::string(d->name()) + " unavailable: " + why);
  }
  detail::WalkBudget budget;
  detail::MemberVisitor visit = [&](const Item& member) {
    for (Detector* d : ready) {
      if (d->wants_members())
        d->scan(member, verdict);
    }
    detail::walk_archive(member, settings_.limits, budget, verdict, visit);
  };
  const Item whole{source, name, {}, 0};
  for (Detector* d : ready) {
    if (ahead != nullptr && ahead->parts_->by == d && ahead->parts_->from == 0 &&
        ahead->parts_->covered > 0)
      d->scan_rest(whole, *ahead->parts_, verdict);
    else
      d->scan(whole, verdict);
  }
  if (settings_.heuristics)
    detail::walk_archive(whole, settings_.limits, budget, verdict, visit);
  verdict.stats.bytes_expanded = budget.expanded;
  verdict.stats.members = budget.members;
  verdict.stats.depth = budget.deepest;
  return verdict;
}

std::vector<Scanner::DetectorStatus> Scanner::status() {
  std::vector<DetectorStatus> out;
  for (const auto& d : detectors_)
    out.push_back({std::string(d->name()), d->unavailable()});
  return out;
}

}  // namespace splitfs::scan
