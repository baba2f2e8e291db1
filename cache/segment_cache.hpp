// The mount's read cache: decrypted segments in memory under a byte budget, least recently used
// evicted first.
//
// Every entry is in exactly one of two lists, or in none:
//
//   lru_     entries only the cache refers to, oldest first. These are the ones eviction takes.
//   in_use_  entries at least one Handle refers to (a read is copying out of them). They are never
//            evicted: a reader's bytes cannot vanish under it. When the last Handle goes, the
//            entry moves to the newest end of lru_.
//   neither  entries erased or replaced while a Handle still refers to them: no longer findable,
//            freed when the last Handle goes.
//
// Each entry is charged its byte length plus a fixed overhead. usage() is the charge of all
// findable entries; after every insert, entries are evicted from the old end of lru_ until usage()
// is at most the capacity or lru_ is empty. Memory can therefore exceed the capacity only by what
// Handles pin at that moment (a few segments per concurrent read), and a capacity of 0 caches
// nothing beyond those pins. Lookups count hits and misses; one mutex guards everything, held
// only for list and table updates, never while bytes are copied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/bytes.hpp"

namespace splitfs::cache {

struct CacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
  std::uint64_t inserts = 0;
  std::uint64_t evictions = 0;
  std::uint64_t entries = 0;       // findable entries
  std::uint64_t usage = 0;         // their charge in bytes
  std::uint64_t pinned_bytes = 0;  // charge of entries Handles refer to (in_use_ and erased)
  std::uint64_t capacity = 0;
};

class SegmentCache {
  struct Entry;

 public:
  // Charged per entry on top of its bytes: the entry, its key and the table slot.
  static constexpr std::size_t kEntryOverhead = 160;

  // A reference to one cached segment; keeps it alive and unevictable until destroyed.
  class Handle {
   public:
    Handle() = default;
    ~Handle();
    Handle(Handle&& other) noexcept;
    Handle& operator=(Handle&& other) noexcept;
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;

    explicit operator bool() const { return entry_ != nullptr; }
    ByteView bytes() const;

   private:
    friend class SegmentCache;
    Handle(SegmentCache* cache, Entry* entry) : cache_(cache), entry_(entry) {}
    SegmentCache* cache_ = nullptr;
    Entry* entry_ = nullptr;
  };

  explicit SegmentCache(std::size_t capacity_bytes);
  ~SegmentCache();
  SegmentCache(const SegmentCache&) = delete;
  SegmentCache& operator=(const SegmentCache&) = delete;

  // The segment cached under key (a hit, made most recently used), or an empty Handle (a miss).
  // count = false leaves the hit and miss counters alone (a second look after waiting for a
  // download another reader started).
  Handle lookup(const std::string& key, bool count = true);
  // Like lookup() but counts neither a hit nor a miss (read-ahead asking what is there).
  bool contains(const std::string& key);
  // Caches bytes under key, replacing any entry with that key, and returns a Handle to it.
  Handle insert(const std::string& key, Bytes bytes);
  void erase(const std::string& key);
  // Changes the budget, evicting as needed.
  void set_capacity(std::size_t capacity_bytes);
  CacheStats stats() const;

 private:
  void release(Entry* entry);
  void unlink(Entry* entry);
  void append(Entry* list, Entry* entry);
  void evict_locked();
  void drop_locked(Entry* entry);

  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::size_t usage_ = 0;
  std::size_t pinned_ = 0;
  CacheStats counters_;
  // Dummy heads of the two circular lists; lru_.next is the oldest entry.
  std::unique_ptr<Entry> lru_;
  std::unique_ptr<Entry> in_use_;
  // Owners: findable entries by key, and erased entries Handles still refer to.
  std::unordered_map<std::string, std::unique_ptr<Entry>> table_;
  std::unordered_map<const Entry*, std::unique_ptr<Entry>> detached_;
};

}  // namespace splitfs::cache
