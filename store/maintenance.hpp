// Store maintenance for the servers: compaction in the background (periodic, and at once when an
// operator asks from another process), the operator commands' side of that, and the text of
// their reports.
//
// An operator's request is the file DIR/COMPACT (written atomically, holding a random token and
// the grace period); the server's background compactor polls for it, runs a compaction recorded
// under that token, and the requesting command reads the record from the index.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include "store/store.hpp"

namespace splitfs::store {

// Runs store.compact() every `interval` (never if it is zero) and whenever an operator asks with
// request_compaction(). Each run that reclaimed something is described through `log`. The
// destructor stops a run in progress at its next step and joins.
class BackgroundCompactor {
 public:
  BackgroundCompactor(Store& store, std::filesystem::path dir, std::chrono::seconds interval,
                      std::function<void(std::string_view)> log);
  ~BackgroundCompactor();
  BackgroundCompactor(const BackgroundCompactor&) = delete;
  BackgroundCompactor& operator=(const BackgroundCompactor&) = delete;

 private:
  void run();
  void compact(const CompactOptions& options);

  Store& store_;
  const std::filesystem::path dir_;
  const std::chrono::seconds interval_;
  const std::function<void(std::string_view)> log_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Asks the server that holds the store in `dir` open to compact now (with its own grace period
// unless `grace` is given) and waits up to `wait` for the report. busy if none came in time.
std::error_code request_compaction(const std::filesystem::path& dir,
                                   std::optional<std::chrono::seconds> grace,
                                   std::chrono::seconds wait, CompactionReport& out);

// "1.5 GiB" for a byte count.
std::string human_bytes(std::uint64_t bytes);
// One line for a server's log.
std::string summary(const CompactionReport& report);
// Multi-line texts for the operator commands, each line ending in a newline.
std::string describe(const CompactionReport& report);
std::string describe(const StoreStats& stats);
std::string describe(const CheckReport& report);

}  // namespace splitfs::store
