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
// writes. A store directory (index.sqlite, packs/, LOCK) is open in at most one process: open()
// fails while another holds it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
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
  // Drops the file and its references. not_found if absent.
  virtual std::error_code remove_file(std::string_view user, const Id& file) = 0;
  virtual std::error_code file_info(std::string_view user, const Id& file, FileInfo& out) = 0;
};

}  // namespace splitfs::store

template <>
struct std::is_error_code_enum<splitfs::store::Errc> : std::true_type {};
