// The server's request handler, shared by both doors: maps each protocol request onto the store and
// each store outcome onto a protocol reply. Never throws; a failure becomes an ErrorReply whose
// text is short and reveals no internals (no paths, no SQL, no system error strings).
//
// Also here: a server's storage settings and operator commands (StorageCommands), which both doors
// share through server_main.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"
#include "store/maintenance.hpp"
#include "store/store.hpp"

namespace CLI {
class App;
}

namespace splitfs::service {

class Service {
 public:
  explicit Service(store::Store& store) : store_(store) {}

  // Acts as `user`, the enrolled name the door authenticated. Safe to call from several threads at
  // once (the store is). `quota` (bytes, 0 for none) is enforced here only for a store that keeps
  // quotas itself (Store::keeps_quotas); otherwise the caller enforces it.
  protocol::Reply handle(std::string_view user, const protocol::Request& request,
                         std::uint64_t quota = 0);

 private:
  store::Store& store_;
};

// The reply for a request that could not be decoded.
protocol::ErrorReply decode_failure(std::error_code error);

// How a server keeps its store: --compact-interval SECONDS (background compaction; 0 turns it
// off), --garbage-grace SECONDS (how long unreferenced shares survive; see store.hpp), --capacity
// SIZE (the most the store may take on disk; none by default) and --reserve SIZE (space held in
// DATA/RESERVE and given back when the disk fills up, so that removals and compaction still work;
// 8M by default, 0 for none). A store that is full answers quota_exceeded (HTTP 507) with a message
// saying so; what it stored before stays intact.
struct StorageSettings {
  std::int64_t compact_interval_seconds = 600;
  std::int64_t garbage_grace_seconds = 3600;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t reserve_bytes = 8u << 20;
  // For the store in data/store.
  store::Options store_options(const std::filesystem::path& data) const;
};

// "10G", "500M", "1.5T", "4096" (bytes; K, M, G, T, P are powers of 1024, an optional "iB" or "B"
// follows), or "none" (0). nullopt for anything else, or a size below 1 byte or above 9e18.
std::optional<std::uint64_t> parse_size(const std::string& text);

// The storage options and the operator commands on a server's store, DIR/store:
//   compact [--grace SECONDS] [--wait SECONDS]   reclaim space now and print what was done; on a
//                                                running server, the server does it and reports
//   check [--wait SECONDS]                       verify the store; exit status 1 on a problem
//   stats                                        objects, bytes, dedup and compression ratios
// check and stats work beside a running server too (read-only). With --backend (a shared store,
// store/shared_store.hpp) they work on that store instead, through its own engines, beside any
// number of running servers: compact runs here (waiting up to --wait for one a server is running),
// check waits for a running compaction.
struct SharedBackend {
  std::string backend;  // s3://BUCKET?endpoint=...; empty for the local store in DATA/store
  std::string index;
  std::string credentials_file;
};

class StorageCommands {
 public:
  StorageCommands(CLI::App& app, StorageSettings& settings);
  bool chosen() const;
  // Runs the chosen command on data/store, or on the shared store, and returns the exit status.
  int run(const std::filesystem::path& data, const std::string& program,
          const SharedBackend& shared = {}) const;

 private:
  int run_shared(const std::filesystem::path& data, const std::string& program,
                 const SharedBackend& shared) const;

  StorageSettings& settings_;
  CLI::App* compact_ = nullptr;
  CLI::App* check_ = nullptr;
  CLI::App* stats_ = nullptr;
  std::int64_t grace_seconds_ = -1;  // compact --grace; -1: the configured one
  std::int64_t wait_seconds_ = 600;
};

// Background compaction of a running server's store (store/maintenance.hpp): every
// compact_interval_seconds (never when 0), and whenever an operator runs `compact` beside it.
std::unique_ptr<store::BackgroundCompactor> start_background_compaction(
    store::Store& store, const std::filesystem::path& store_dir, const StorageSettings& settings);

}  // namespace splitfs::service
