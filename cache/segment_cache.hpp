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
// Each entry is charged its allocated bytes (the buffer's capacity) plus a fixed overhead. The
// capacity is the budget of all the segment-sized memory the owner holds, not only of the
// entries: a Reservation charges bytes that live elsewhere for a while (a transfer in flight, a
// file's segment lists) against the same budget. usage is the charge of all findable entries,
// reserved that of all live Reservations; after every insert and every reservation, entries are
// evicted from the old end of lru_ until usage + reserved is at most the capacity or lru_ is
// empty. Memory can therefore exceed the capacity only by what Handles pin at that moment (a few
// segments per concurrent read) and by reservations larger than everything evictable, and a
// capacity of 0 caches nothing beyond those. Lookups count hits and misses; one mutex guards
// everything, held only for list and table updates, never while bytes are copied.
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
  std::uint64_t reserved = 0;      // bytes live Reservations hold
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

  // Bytes charged against the budget while it lives; they are released when it is destroyed or
  // reset. Must not outlive the cache.
  class Reservation {
   public:
    Reservation() = default;
    ~Reservation() { reset(); }
    Reservation(Reservation&& other) noexcept;
    Reservation& operator=(Reservation&& other) noexcept;
    Reservation(const Reservation&) = delete;
    Reservation& operator=(const Reservation&) = delete;

    std::size_t bytes() const { return bytes_; }
    // Charges bytes instead of what it held, evicting as needed. Needs a reservation from
    // reserve().
    void resize(std::size_t bytes);
    // Releases what it holds (bytes() becomes 0).
    void reset() { resize(0); }

   private:
    friend class SegmentCache;
    Reservation(SegmentCache* cache, std::size_t bytes) : cache_(cache), bytes_(bytes) {}
    SegmentCache* cache_ = nullptr;
    std::size_t bytes_ = 0;
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
  // Charges bytes that are about to exist outside the cache (see above), evicting entries to make
  // room for them. Never waits and never fails: when nothing is left to evict, the budget is
  // exceeded and stats() shows by how much.
  Reservation reserve(std::size_t bytes);
  // Changes the budget, evicting as needed.
  void set_capacity(std::size_t capacity_bytes);
  CacheStats stats() const;

 private:
  void release(Entry* entry);
  void change_reserved(std::size_t from, std::size_t to);
  void unlink(Entry* entry);
  void append(Entry* list, Entry* entry);
  void evict_locked();
  void drop_locked(Entry* entry);

  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::size_t usage_ = 0;
  std::size_t pinned_ = 0;
  std::size_t reserved_ = 0;
  CacheStats counters_;
  // Dummy heads of the two circular lists; lru_.next is the oldest entry.
  std::unique_ptr<Entry> lru_;
  std::unique_ptr<Entry> in_use_;
  // Owners: findable entries by key, and erased entries Handles still refer to.
  std::unordered_map<std::string, std::unique_ptr<Entry>> table_;
  std::unordered_map<const Entry*, std::unique_ptr<Entry>> detached_;
};

}  // namespace splitfs::cache
