// The quarantine folder (default HOME/quarantine, mode 0700): for each blocked file, its bytes
// (ID.data, mode 0400, never executable) and what was found and where it came from (ID.json).
// Nothing is ever run or opened from here; `splitfs quarantine list` shows it. The bytes of all
// entries together stay under a bound: past it, an entry records the findings but not the bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "scan/scan.hpp"

namespace splitfs::scan {

struct QuarantineEntry {
  std::string id;  // "YYYYMMDD-HHMMSS-<8 hex>"
  std::int64_t time_ns = 0;
  std::string origin;  // "store", "fetch" or "mount"
  std::string file;    // the local path, the stored name or the path in the mount
  std::uint64_t size = 0;
  std::filesystem::path data;  // the bytes kept; empty when they were not
  std::string sha256;          // of the bytes kept
  std::string not_kept;        // why the bytes were not kept
  Severity severity = Severity::clean;
  std::vector<Finding> findings;
};

class Quarantine {
 public:
  static constexpr std::uint64_t kDefaultMaxBytes = 1ull << 30;
  Quarantine(std::filesystem::path dir, std::uint64_t max_bytes = kDefaultMaxBytes);

  // Copies source's bytes in (when they fit the bound) and records the verdict. Throws
  // splitfs::LocalIoError only when not even the record can be written.
  QuarantineEntry keep(Source& source, const std::string& origin, const std::string& file,
                       const Verdict& verdict);
  // Newest first, at most max of them; entries that cannot be read are skipped.
  std::vector<QuarantineEntry> list(std::size_t max = 10000) const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::uint64_t bytes_held() const;
  std::filesystem::path dir_;
  std::uint64_t max_bytes_;
};

// JSON texts for `splitfs quarantine list --json` and `splitfs scan --json`.
std::string to_json(const std::vector<QuarantineEntry>& entries);
std::string to_json(const std::string& file, const Verdict& verdict, Action action);

}  // namespace splitfs::scan
