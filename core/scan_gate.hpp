// The malware check between a Client and the servers. Client::store asks it about a local file
// before anything is committed (a small file: before anything is sent); Client::fetch about the
// rebuilt file before it is renamed into place.
// A verdict the policy blocks puts a copy in the quarantine folder and raises MaliciousFileError;
// one it lets through with a warning goes to the warning handler. The scanner (YARA rules, the
// ClamAV engine) is made on the first check and shared by every Client of the process with the
// same settings, so Clients that never store or fetch (the mount's) cost nothing.
#pragma once

#include <sys/stat.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <splitfs/client.hpp>
#include <string>

#include "core/config.hpp"
#include "scan/scan.hpp"

namespace splitfs::core {

class ScanGate {
 public:
  explicit ScanGate(ScanConfig config);

  void set_enabled(bool enabled);
  void set_warning_handler(std::function<void(const ScanWarning&)> handler);

  // What a store's scan saw of the file, to be sure the bytes sent are the bytes scanned.
  struct Scanned {
    bool scanned = false;
    struct stat st {};
  };
  // Scans the local file open as fd (stored as name) before the commit (before anything is sent,
  // or on its own thread beside the upload). Throws MaliciousFileError when blocked.
  Scanned check_store(int fd, const std::filesystem::path& path, const std::string& name);
  // Before the commit: throws LocalIoError if the file changed since it was scanned.
  void confirm_unchanged(int fd, const std::filesystem::path& path, const Scanned& scanned) const;
  // Scans a fetched file (the temporary open as fd) before it is renamed to dest. Throws
  // MaliciousFileError when blocked; the caller then removes the temporary.
  void check_fetch(int fd, const std::string& name, const std::filesystem::path& dest);
  // The same over a source (a fetch's output read while it is being written).
  void check_fetch(scan::Source& source, const std::string& name,
                   const std::filesystem::path& dest);
  // Whether a check would scan anything (scanning is on).
  bool enabled();

 private:
  void check(scan::Source& source, const std::string& origin, const std::string& file,
             const std::string& name_for_checks);
  std::shared_ptr<scan::Scanner> scanner();

  ScanConfig config_;
  std::mutex mutex_;
  bool enabled_ = true;
  std::function<void(const ScanWarning&)> warn_;
  std::shared_ptr<scan::Scanner> scanner_;
};

// The default warning handler: one line on stderr.
void print_scan_warning(const ScanWarning& warning);

}  // namespace splitfs::core
