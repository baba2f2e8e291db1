// Internal to the store: what the engine and the operator's read-only views share. Accounting
// (usage, stats) and the consistency check read the index through any connection, the engine's
// own or a read-only one opened beside a running server, and never write. The maintenance lock
// keeps a check and a compaction (which moves records and unlinks packs) from overlapping, across
// processes.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/bytes.hpp"
#include "store/pack.hpp"
#include "store/store.hpp"

namespace splitfs::store::detail {

inline constexpr const char* kIndexFile = "index.sqlite";
inline constexpr const char* kPacksDir = "packs";
inline constexpr const char* kLockFile = "LOCK";
inline constexpr const char* kMaintenanceFile = "MAINTENANCE";
// A file's refs column: one (share id | chunks u32 LE) per reference occurrence.
inline constexpr std::size_t kRefBytes = 32 + 4;
inline constexpr std::uint64_t kChunkBytes = 1024;
// Compactions remembered in the index.
inline constexpr int kCompactionHistory = 100;

Bytes encode_refs(std::span<const ShareRef> refs);
bool decode_refs(ByteView blob, std::vector<ShareRef>& refs);

// Usage of one user, or of all users together when `user` is empty.
std::error_code usage_of(sqlite3* db, std::optional<std::string_view> user, Usage& out);
std::error_code collect_stats(sqlite3* db, const std::filesystem::path& dir, StoreStats& out);
std::error_code run_check(sqlite3* db, const std::filesystem::path& dir, CheckReport& out);
// The last compaction recorded, or the last one with `trigger`.
std::optional<CompactionReport> last_compaction(sqlite3* db,
                                                std::optional<std::string_view> trigger = {});

// Sizes of the index, its WAL and its shared-memory file.
std::uint64_t index_bytes(const std::filesystem::path& dir);
// The pack files in dir/packs by number, with their sizes.
std::error_code list_packs(const std::filesystem::path& dir,
                           std::vector<std::pair<std::uint32_t, std::uint64_t>>& out);

// flock on dir/MAINTENANCE: exclusive for a compaction, shared for a check.
class MaintenanceLock {
 public:
  // Waits up to `wait` (zero: tries once). nullopt when the lock stayed taken or cannot be made.
  static std::optional<MaintenanceLock> acquire(const std::filesystem::path& dir, bool exclusive,
                                                std::chrono::milliseconds wait);

 private:
  explicit MaintenanceLock(pack::Fd fd) : fd_(std::move(fd)) {}
  pack::Fd fd_;  // closing it releases the lock
};

}  // namespace splitfs::store::detail
