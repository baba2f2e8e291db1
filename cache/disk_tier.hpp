// The mount's optional second cache tier: segments kept in files under a folder, so a remount or a
// file larger than the memory budget is read without the network.
//
// Each entry is sealed with AES-256-GCM under a key derived from the tier's key, with the
// cache key as associated data: the folder holds no plaintext, and a file altered, truncated or
// renamed to another entry's name fails authentication, is deleted and counts as a miss (never as
// data). File names are a keyed hash of the cache key. The folder's usage is bounded by a byte
// budget, least recently used entries removed first; entries found at start-up are adopted (oldest
// modification time first), temporary files left by a crash removed. Every failure (disk full,
// permissions) makes the tier a miss, never a failed read. Thread-safe: the index is under one
// mutex, file reads and writes run outside it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "common/bytes.hpp"
#include "core/crypto.hpp"

namespace splitfs::cache {

struct DiskTierStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t writes = 0;
  std::uint64_t evictions = 0;
  std::uint64_t rejected = 0;  // entries that failed authentication, were deleted and missed
  std::uint64_t errors = 0;    // reads or writes the disk refused
  std::uint64_t entries = 0;
  std::uint64_t usage = 0;  // bytes of the entries' files
  std::uint64_t capacity = 0;
};

class DiskTier {
 public:
  // The largest entry kept (a segment is at most 4 MiB).
  static constexpr std::size_t kMaxEntryBytes = 16u << 20;

  // Creates dir (mode 0700) if needed. key: secret and used for nothing else (the client derives
  // it from the content key). Throws splitfs::LocalIoError when the folder cannot be used.
  DiskTier(std::filesystem::path dir, std::uint64_t capacity_bytes, const core::Key& key);

  // The bytes cached under key, verified; nullopt on a miss.
  std::optional<Bytes> get(const std::string& key);
  // Keeps bytes under key (replacing an entry with that key); false if it was not kept.
  bool put(const std::string& key, ByteView bytes);
  DiskTierStats stats() const;

 private:
  struct Entry {
    std::uint64_t size = 0;
    std::list<std::string>::iterator position;  // in lru_
  };
  std::string file_name(const std::string& key) const;
  void adopt_existing();
  void forget_locked(const std::string& name);
  // Removes least recently used entries until usage fits; returns the files to delete.
  std::list<std::string> evict_locked();
  void remove_files(const std::list<std::string>& names);

  const std::filesystem::path dir_;
  const std::uint64_t capacity_;
  core::Key name_key_{};
  core::Key seal_key_{};
  mutable std::mutex mutex_;
  std::list<std::string> lru_;  // file names, least recently used first
  std::unordered_map<std::string, Entry> entries_;
  std::uint64_t usage_ = 0;
  std::uint64_t temp_counter_ = 0;
  DiskTierStats counters_;
};

}  // namespace splitfs::cache
