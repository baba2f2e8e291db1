#include "cache/segment_cache.hpp"

#include <cassert>
#include <utility>

namespace splitfs::cache {

struct SegmentCache::Entry {
  std::string key;
  Bytes bytes;
  std::size_t charge = 0;
  std::size_t refs = 0;   // Handles referring to the entry
  bool in_cache = false;  // findable through table_ (in lru_ or in_use_)
  Entry* next = this;
  Entry* prev = this;
};

SegmentCache::Handle::~Handle() {
  if (entry_)
    cache_->release(entry_);
}

SegmentCache::Handle::Handle(Handle&& other) noexcept
    : cache_(other.cache_), entry_(std::exchange(other.entry_, nullptr)) {}

SegmentCache::Handle& SegmentCache::Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    if (entry_)
      cache_->release(entry_);
    cache_ = other.cache_;
    entry_ = std::exchange(other.entry_, nullptr);
  }
  return *this;
}

ByteView SegmentCache::Handle::bytes() const {
  return entry_ ? ByteView(entry_->bytes) : ByteView();
}

SegmentCache::Reservation::Reservation(Reservation&& other) noexcept
    : cache_(other.cache_), bytes_(std::exchange(other.bytes_, 0)) {}

SegmentCache::Reservation& SegmentCache::Reservation::operator=(Reservation&& other) noexcept {
  if (this != &other) {
    reset();
    cache_ = other.cache_;
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void SegmentCache::Reservation::resize(std::size_t bytes) {
  if (bytes == bytes_)
    return;
  assert(cache_ != nullptr);
  cache_->change_reserved(bytes_, bytes);
  bytes_ = bytes;
}

SegmentCache::SegmentCache(std::size_t capacity_bytes)
    : capacity_(capacity_bytes),
      lru_(std::make_unique<Entry>()),
      in_use_(std::make_unique<Entry>()) {}

SegmentCache::~SegmentCache() {
  // Handles and Reservations must not outlive the cache.
  assert(in_use_->next == in_use_.get() && detached_.empty() && reserved_ == 0);
}

void SegmentCache::unlink(Entry* e) {
  e->prev->next = e->next;
  e->next->prev = e->prev;
  e->next = e->prev = e;
}

// Appends at the newest end of list.
void SegmentCache::append(Entry* list, Entry* e) {
  e->next = list;
  e->prev = list->prev;
  e->prev->next = e;
  list->prev = e;
}

SegmentCache::Handle SegmentCache::lookup(const std::string& key, bool count) {
  std::lock_guard lock(mutex_);
  const auto it = table_.find(key);
  if (it == table_.end()) {
    counters_.misses += count ? 1 : 0;
    return {};
  }
  counters_.hits += count ? 1 : 0;
  Entry* e = it->second.get();
  if (e->refs++ == 0) {
    unlink(e);
    append(in_use_.get(), e);
    pinned_ += e->charge;
  }
  return Handle(this, e);
}

bool SegmentCache::contains(const std::string& key) {
  std::lock_guard lock(mutex_);
  return table_.contains(key);
}

SegmentCache::Handle SegmentCache::insert(const std::string& key, Bytes bytes) {
  auto owned = std::make_unique<Entry>();
  owned->key = key;
  owned->bytes = std::move(bytes);
  // What the buffer holds, not what it shows: a vector grown by steps keeps its slack.
  owned->charge = owned->bytes.capacity() + key.size() + kEntryOverhead;
  owned->refs = 1;
  owned->in_cache = true;
  Entry* e = owned.get();
  std::lock_guard lock(mutex_);
  if (const auto it = table_.find(key); it != table_.end())
    drop_locked(it->second.get());
  table_.emplace(key, std::move(owned));
  append(in_use_.get(), e);
  usage_ += e->charge;
  pinned_ += e->charge;
  ++counters_.inserts;
  evict_locked();
  return Handle(this, e);
}

void SegmentCache::erase(const std::string& key) {
  std::lock_guard lock(mutex_);
  if (const auto it = table_.find(key); it != table_.end())
    drop_locked(it->second.get());
}

SegmentCache::Reservation SegmentCache::reserve(std::size_t bytes) {
  change_reserved(0, bytes);
  return Reservation(this, bytes);
}

void SegmentCache::change_reserved(std::size_t from, std::size_t to) {
  std::lock_guard lock(mutex_);
  assert(reserved_ >= from);
  reserved_ = reserved_ - from + to;
  if (to > from)
    evict_locked();
}

void SegmentCache::set_capacity(std::size_t capacity_bytes) {
  std::lock_guard lock(mutex_);
  capacity_ = capacity_bytes;
  evict_locked();
}

// Makes e unfindable; frees it now if no Handle refers to it, else when the last one goes.
void SegmentCache::drop_locked(Entry* e) {
  auto node = table_.extract(e->key);
  unlink(e);
  e->in_cache = false;
  usage_ -= e->charge;
  if (e->refs > 0)
    detached_.emplace(e, std::move(node.mapped()));
}

void SegmentCache::evict_locked() {
  while (usage_ + reserved_ > capacity_ && lru_->next != lru_.get()) {
    drop_locked(lru_->next);
    ++counters_.evictions;
  }
}

void SegmentCache::release(Entry* e) {
  std::lock_guard lock(mutex_);
  assert(e->refs > 0);
  if (--e->refs > 0)
    return;
  pinned_ -= e->charge;
  if (!e->in_cache) {
    detached_.erase(e);
    return;
  }
  unlink(e);
  append(lru_.get(), e);
  evict_locked();
}

CacheStats SegmentCache::stats() const {
  std::lock_guard lock(mutex_);
  CacheStats out = counters_;
  out.entries = table_.size();
  out.usage = usage_;
  out.pinned_bytes = pinned_;
  out.reserved = reserved_;
  out.capacity = capacity_;
  return out;
}

}  // namespace splitfs::cache
