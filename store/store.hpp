// The servers' storage engine: one library behind both doors. Shares (opaque encrypted blobs) live
// in append-only pack files; an SQLite index (WAL) maps each (user, share id) to its place in a
// pack and its reference count, and each (user, file id) to its current version, entry, manifest
// and share references.
//
// Guarantees: put_shares returns only once the shares are durable (pack data fsync'd before the
// index rows commit). commit makes a file's new version visible in one index transaction, and only
// if every referenced share is held; a crash at any moment leaves either the old or the new
// version, never a mix. Pack bytes not reachable from the index (a crash mid-append) are garbage,
// never served. Every method is safe to call from several threads at once; reads never wait for
// writes, and writes made at the same time may share one sync (group commit) without returning
// before their own data is durable. A store directory (index.sqlite, packs/, LOCK) is open in at
// most one process: open() fails while another holds it.
//
// Space: a share is held once per user however many files reference it (deduplication), and is
// kept while referenced. Unreferenced shares survive Options::garbage_grace, since an upload's
// shares stay unreferenced until its commit; after that, compact() drops them and rewrites packs
// that are mostly dead (copy live records to a new pack, fsync it, move their index rows in one
// short transaction, then unlink the old pack), so a crash at any point loses no committed share.
// check() verifies the index against the packs, every record's checksum and every refcount.
//
// store/shared_store.hpp is the other implementation of this interface: packs as objects in an
// S3-compatible bucket and the index in PostgreSQL, served by several processes at once.
//
// Running out of space: put_shares answers no_space, instead of io, when the disk is full (ENOSPC,
// EDQUOT, SQLite's SQLITE_FULL) or when the store would grow past Options::capacity_bytes. Nothing
// stored before is touched: a pack append that did not fit is cut back off the pack, and an index
// transaction that did not fit rolls back. The store can keep a reserve file
// (Options::reserve_file) that it gives back to the disk the first time the disk is found full, so
// that removals and compaction still find room for their index writes and copies; until the reserve
// can be taken again, new data is refused at once. Once space is free again (files removed and
// compacted, or space freed on the disk), the next put takes the reserve back and proceeds.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::store {

enum class Errc {
  not_found = 1,   // no such file, or no such share
  conflict,        // commit version is not newer than the stored one
  missing_shares,  // commit references shares that are not held
  corrupt,         // a pack record failed its checksum or lies outside its pack
  io,              // the disk failed us (details logged by the store, not returned)
  too_large,       // a share exceeds the store's own size bound (far above the protocol's)
  busy,            // maintenance could not start: another task holds the store
  no_space,        // the disk is full, or storing this would pass the configured capacity
  quota_exceeded,  // storing this would take the user past the quota given (keeps_quotas())
};
const std::error_category& store_category();
std::error_code make_error_code(Errc e);

// Opening a store or an unrecoverable disk failure at start-up.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ShareRef {
  Id id{};
  std::uint32_t chunks = 0;
};

struct ShareInput {
  Id id{};
  ByteView data;
};

// One commit of a batch (see Store::commit_batch); the views must outlive the call.
struct CommitInput {
  Id file{};
  std::uint64_t version = 0;
  std::span<const ShareRef> refs;
  ByteView entry;
  ByteView manifest;
};

struct FileRecord {
  std::uint64_t version = 0;
  Bytes entry;
  Bytes manifest;
};

struct FileSummary {
  Id file{};
  std::uint64_t version = 0;
  Bytes entry;
};

struct FileInfo {
  std::uint64_t version = 0;
  std::uint64_t shares = 0;
  std::uint64_t chunks = 0;
  std::uint64_t stored_bytes = 0;
};

struct Options {
  std::uint64_t pack_target_bytes = 64u << 20;  // start a new pack file past this size
  // How long an unreferenced share survives compaction, counted from its upload or from the loss
  // of its last reference. has_shares() calls such a share absent once half of it has passed, so
  // a client that finds a share held has at least the other half to commit a reference to it.
  std::chrono::seconds garbage_grace{3600};
  // Compaction rewrites a pack once at least this fraction of its bytes is dead.
  double rewrite_dead_fraction = 0.5;
  // The most the store may occupy on disk (packs and index); 0 for no limit but the disk's. New
  // shares that would take it past this are refused with no_space. Commits are not counted
  // against it: their index rows are small next to the shares that had to be put first.
  std::uint64_t capacity_bytes = 0;
  // Space held in `reserve_file` (outside the store folder, on the same filesystem) and given back
  // when the disk is full (see above). No reserve when either is empty or zero.
  std::filesystem::path reserve_file;
  std::uint64_t reserve_bytes = 0;
};

// What one user occupies on a server (Store::usage), or all users together (StoreStats::total).
// Logical sizes count whole 1 KiB chunks (a file's short last chunk counts as full).
struct Usage {
  std::uint64_t files = 0;
  std::uint64_t logical_bytes = 0;        // the files' data, as many times as files hold it
  std::uint64_t referenced_bytes = 0;     // stored bytes of the files' shares, per reference
  std::uint64_t shares = 0;               // distinct referenced shares
  std::uint64_t share_logical_bytes = 0;  // their data before compression
  std::uint64_t share_bytes = 0;          // their stored (compressed, encrypted) bytes
  std::uint64_t garbage_shares = 0;       // unreferenced shares awaiting compaction
  std::uint64_t garbage_bytes = 0;
  std::uint64_t disk_bytes = 0;  // pack records (headers included) and file records

  // logical_bytes / share_logical_bytes: what deduplication saves (1 when it saves nothing).
  double dedup_ratio() const;
  // share_logical_bytes / share_bytes: what compression saves (just under 1 for random data).
  double compression_ratio() const;
};

struct CompactionReport {
  std::string trigger;       // what asked for it (CompactOptions::trigger)
  std::int64_t started = 0;  // Unix seconds
  std::int64_t finished = 0;
  std::int64_t grace_seconds = 0;
  std::uint64_t garbage_shares = 0;  // unreferenced shares dropped
  std::uint64_t garbage_bytes = 0;
  std::uint64_t packs_rewritten = 0;
  std::uint64_t packs_deleted = 0;  // rewritten ones included
  std::uint64_t records_moved = 0;
  std::uint64_t bytes_moved = 0;
  std::uint64_t disk_bytes_before = 0;
  std::uint64_t disk_bytes_after = 0;
};

struct StoreStats {
  Usage total;
  std::uint64_t users = 0;
  std::uint64_t packs = 0;
  std::uint64_t pack_bytes = 0;       // size of the pack files
  std::uint64_t live_pack_bytes = 0;  // of which records the index knows
  std::uint64_t index_bytes = 0;      // the index with its write-ahead log
  std::uint64_t disk_bytes() const { return pack_bytes + index_bytes; }
  std::optional<CompactionReport> last_compaction;
};

struct CheckReport {
  static constexpr std::size_t kMaxListed = 100;
  std::uint64_t users = 0;
  std::uint64_t files = 0;
  std::uint64_t shares = 0;
  std::uint64_t packs = 0;
  std::uint64_t bytes_verified = 0;
  std::uint64_t problem_count = 0;
  std::vector<std::string> problems;  // the first kMaxListed
  std::vector<std::string> notes;     // harmless findings, such as garbage awaiting compaction
  bool ok() const { return problem_count == 0; }
  void problem(std::string text);
};

struct CompactOptions {
  std::optional<std::chrono::seconds> grace;  // Options::garbage_grace when empty
  std::string trigger;                        // recorded with the run, e.g. "periodic"
  // Checked between steps: once set, the compaction ends early, leaving the store consistent.
  const std::atomic<bool>* stop = nullptr;
};

class Store {
 public:
  // Opens (creating if needed) the store in `dir`. Throws StoreError.
  static std::unique_ptr<Store> open(const std::filesystem::path& dir, const Options& options = {});
  virtual ~Store() = default;

  // One flag per id, in order: is the share held for this user?
  virtual std::vector<bool> has_shares(std::string_view user, std::span<const Id> ids) = 0;
  // Stores the shares not yet held; durable on success. Idempotent.
  virtual std::error_code put_shares(std::string_view user, std::span<const ShareInput> shares) = 0;
  // Reads one share's blob. not_found, corrupt or io on failure.
  virtual std::error_code get_share(std::string_view user, const Id& id, Bytes& out) = 0;
  // Makes `version` current for `file`: conflict if version <= the stored version, missing_shares
  // (with the ids in `missing`) if a ref is not held. Adjusts reference counts of old and new refs.
  virtual std::error_code commit(std::string_view user, const Id& file, std::uint64_t version,
                                 std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                                 std::vector<Id>& missing) = 0;
  virtual std::error_code get_file(std::string_view user, const Id& file, FileRecord& out) = 0;
  virtual std::vector<FileSummary> list_files(std::string_view user) = 0;
  // The same, telling a failure (io, with `out` empty) from an empty listing. The default is for
  // a backend that cannot fail there.
  virtual std::error_code list_files(std::string_view user, std::vector<FileSummary>& out) {
    out = list_files(user);
    return {};
  }
  // Drops the file and its references. not_found if absent.
  virtual std::error_code remove_file(std::string_view user, const Id& file) = 0;
  virtual std::error_code file_info(std::string_view user, const Id& file, FileInfo& out) = 0;

  // Quotas kept by the store itself (the shared store): each user's Usage::disk_bytes is counted
  // in the same transactions that add or drop what the user holds, and the *_within calls check
  // it there, so that every process serving the store enforces one quota. quota_exceeded when
  // the call would take the user past `quota` bytes (0: no quota); nothing is stored then. A store
  // that answers false here ignores `quota`: its caller counts quotas.
  virtual bool keeps_quotas() const { return false; }
  virtual std::error_code put_shares_within(std::string_view user,
                                            std::span<const ShareInput> shares,
                                            std::uint64_t quota) {
    static_cast<void>(quota);
    return put_shares(user, shares);
  }
  virtual std::error_code commit_within(std::string_view user, const Id& file,
                                        std::uint64_t version, std::span<const ShareRef> refs,
                                        ByteView entry, ByteView manifest, std::uint64_t quota,
                                        std::vector<Id>& missing) {
    static_cast<void>(quota);
    return commit(user, file, version, refs, entry, manifest, missing);
  }

  // Each of `commits` as commit_within would take it alone, in order, one outcome each in
  // `results` (the missing ids of a missing_shares are not kept). A store may make them durable
  // together; this default commits them one by one.
  virtual void commit_batch(std::string_view user, std::span<const CommitInput> commits,
                            std::uint64_t quota, std::span<std::error_code> results) {
    std::vector<Id> missing;
    for (std::size_t i = 0; i < commits.size(); ++i) {
      const CommitInput& c = commits[i];
      results[i] =
          commit_within(user, c.file, c.version, c.refs, c.entry, c.manifest, quota, missing);
    }
  }

  // Maintenance and accounting. A backend that cannot do one answers io.
  virtual std::error_code usage(std::string_view user, Usage& out) {
    static_cast<void>(user);
    out = {};
    return make_error_code(Errc::io);
  }
  virtual std::error_code stats(StoreStats& out) {
    out = {};
    return make_error_code(Errc::io);
  }
  // Reclaims space (see the top of this file). One compaction runs at a time; stores, fetches and
  // commits go on meanwhile, waiting at most for one short index transaction.
  virtual std::error_code compact(const CompactOptions& options, CompactionReport& out) {
    static_cast<void>(options);
    out = {};
    return make_error_code(Errc::io);
  }
  // Verifies everything and reads every record; problems go to `out`, the error code only says
  // whether the check could run.
  virtual std::error_code check(CheckReport& out) {
    out = {};
    return make_error_code(Errc::io);
  }
};

// Operator commands on a store that a running server holds open: read-only views that take no
// part in the server's work. True if another process holds `dir` open.
bool in_use(const std::filesystem::path& dir);
std::error_code inspect_stats(const std::filesystem::path& dir, StoreStats& out);
// Waits (up to `wait`) for a running compaction to finish, and keeps the next one from starting
// until the check is done.
std::error_code inspect_check(const std::filesystem::path& dir, CheckReport& out,
                              std::chrono::seconds wait = std::chrono::seconds(600));

}  // namespace splitfs::store

template <>
struct std::is_error_code_enum<splitfs::store::Errc> : std::true_type {};
