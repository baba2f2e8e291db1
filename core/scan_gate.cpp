// The malware check of Client::store and Client::fetch (see scan_gate.hpp).
#include "core/scan_gate.hpp"

#include <cstdio>
#include <cstring>
#include <splitfs/errors.hpp>

#include "scan/quarantine.hpp"

namespace splitfs::core {

namespace fs = std::filesystem;

namespace {

ScanWarning to_warning(const std::string& file, const scan::Verdict& verdict) {
  ScanWarning out{file, std::string(scan::to_string(verdict.severity)), verdict.summary(), {}};
  for (const auto& f : verdict.findings) {
    out.findings.push_back(
        {std::string(scan::to_string(f.severity)), f.detector, f.rule, f.where, f.detail});
  }
  return out;
}

bool same_time(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

}  // namespace

void print_scan_warning(const ScanWarning& warning) {
  std::string line = "splitfs: warning: " + warning.file + ": " + warning.summary;
  if (!warning.findings.empty())
    line += " - " + warning.findings.front().detail;
  line += "; let through by the policy (warn)\n";
  std::fputs(line.c_str(), stderr);
}

ScanGate::ScanGate(ScanConfig config) : config_(std::move(config)), warn_(print_scan_warning) {}

void ScanGate::set_enabled(bool enabled) {
  std::lock_guard lock(mutex_);
  enabled_ = enabled;
}

void ScanGate::set_warning_handler(std::function<void(const ScanWarning&)> handler) {
  std::lock_guard lock(mutex_);
  warn_ = handler ? std::move(handler) : print_scan_warning;
}

std::shared_ptr<scan::Scanner> ScanGate::scanner() {
  std::lock_guard lock(mutex_);
  if (!enabled_)
    return nullptr;
  if (!scanner_)
    scanner_ = scan::Scanner::shared(config_.settings);
  return scanner_;
}

void ScanGate::check(scan::Source& source, const std::string& origin, const std::string& file,
                     const std::string& name_for_checks) {
  const auto scanner = this->scanner();
  if (!scanner)
    return;
  const scan::Verdict verdict = scanner->scan(source, name_for_checks);
  const scan::Action action = config_.policy.decide(verdict.severity);
  if (action == scan::Action::allow)
    return;
  if (action == scan::Action::warn) {
    std::function<void(const ScanWarning&)> warn;
    {
      std::lock_guard lock(mutex_);
      warn = warn_;
    }
    warn(to_warning(file, verdict));
    return;
  }
  const scan::Finding& worst = *verdict.worst();
  std::string kept;
  std::string where;
  try {
    scan::Quarantine quarantine(config_.quarantine, config_.quarantine_max_bytes);
    const scan::QuarantineEntry entry = quarantine.keep(source, origin, file, verdict);
    kept = entry.data.string();
    where = kept.empty() ? "its bytes are not kept (" + entry.not_kept + ")"
                         : "a copy is kept in quarantine: " + kept;
  } catch (const LocalIoError& e) {
    where = std::string("it could not be recorded in quarantine: ") + e.what();
  }
  throw MaliciousFileError(worst.detector, worst.rule, kept,
                           "refused to " + origin + " " + file + ": " + verdict.summary() + " - " +
                               worst.detail + "; " + where);
}

ScanGate::Scanned ScanGate::check_store(int fd, const fs::path& path, const std::string& name) {
  Scanned out;
  if (!scanner())
    return out;
  if (::fstat(fd, &out.st) != 0)
    throw LocalIoError("cannot read " + path.string() + ": " + std::strerror(errno));
  scan::FileSource source(fd, path);
  check(source, "store", path.string(), name);
  out.scanned = true;
  return out;
}

void ScanGate::confirm_unchanged(int fd, const fs::path& path, const Scanned& scanned) const {
  if (!scanned.scanned)
    return;
  struct stat now {};
  if (::fstat(fd, &now) != 0 || now.st_size != scanned.st.st_size ||
      !same_time(now.st_mtim, scanned.st.st_mtim) || !same_time(now.st_ctim, scanned.st.st_ctim)) {
    throw LocalIoError(path.string() +
                       " changed while it was being stored (after its malware check); store it "
                       "again");
  }
}

void ScanGate::check_fetch(int fd, const std::string& name, const fs::path& dest) {
  if (!scanner())
    return;
  scan::FileSource source(fd, dest);
  check(source, "fetch", name, dest.filename().string());
}

void ScanGate::check_fetch(scan::Source& source, const std::string& name, const fs::path& dest) {
  check(source, "fetch", name, dest.filename().string());
}

bool ScanGate::enabled() {
  std::lock_guard lock(mutex_);
  return enabled_;
}

}  // namespace splitfs::core
