// The segment cache: hits and misses, LRU order, the byte budget, pinned entries.
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cache/segment_cache.hpp"

using splitfs::Bytes;
using splitfs::cache::SegmentCache;

namespace {

constexpr std::size_t kOverhead = SegmentCache::kEntryOverhead;

Bytes filled(std::size_t n, std::uint8_t v) {
  return Bytes(n, v);
}

// Budget for exactly `count` entries of `bytes` bytes under 1-character keys.
std::size_t room_for(std::size_t count, std::size_t bytes) {
  return count * (bytes + 1 + kOverhead);
}

}  // namespace

TEST_CASE("a lookup finds what was inserted and counts hits and misses") {
  SegmentCache cache(1 << 20);
  CHECK_FALSE(cache.lookup("a"));
  cache.insert("a", filled(10, 7));
  auto h = cache.lookup("a");
  REQUIRE(h);
  CHECK(h.bytes().size() == 10);
  CHECK(h.bytes()[9] == 7);
  const auto s = cache.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.inserts == 1);
  CHECK(s.entries == 1);
  CHECK(s.usage == 10 + 1 + kOverhead);
}

TEST_CASE("the least recently used entry is evicted first") {
  SegmentCache cache(room_for(3, 100));
  cache.insert("a", filled(100, 1));
  cache.insert("b", filled(100, 2));
  cache.insert("c", filled(100, 3));
  CHECK(cache.lookup("a"));  // a becomes the newest; b is now the oldest
  cache.insert("d", filled(100, 4));
  CHECK_FALSE(cache.contains("b"));
  CHECK(cache.contains("a"));
  CHECK(cache.contains("c"));
  CHECK(cache.contains("d"));
  CHECK(cache.stats().evictions == 1);
}

TEST_CASE("usage never exceeds the budget once handles are gone") {
  const std::size_t budget = room_for(8, 1000);
  SegmentCache cache(budget);
  for (int i = 0; i < 1000; ++i) {
    cache.insert(std::to_string(i % 37), filled(1000, static_cast<std::uint8_t>(i)));
    CHECK(cache.stats().usage <= budget);
  }
  CHECK(cache.stats().entries <= 8);
  CHECK(cache.stats().pinned_bytes == 0);
}

TEST_CASE("a pinned entry survives eviction and moves to the LRU list when released") {
  SegmentCache cache(room_for(2, 100));
  auto pinned = cache.insert("a", filled(100, 1));
  cache.insert("b", filled(100, 2));
  cache.insert("c", filled(100, 3));  // over budget: b is the only unpinned candidate
  CHECK(cache.contains("a"));
  CHECK_FALSE(cache.contains("b"));
  CHECK(cache.stats().pinned_bytes == 100 + 1 + kOverhead);
  pinned = SegmentCache::Handle();
  CHECK(cache.stats().pinned_bytes == 0);
  // a was released after c, so c is now the oldest.
  cache.insert("d", filled(100, 4));
  CHECK(cache.contains("a"));
  CHECK_FALSE(cache.contains("c"));
  CHECK(cache.contains("d"));
}

TEST_CASE("replacing or erasing a pinned entry keeps its bytes for the holder") {
  SegmentCache cache(1 << 20);
  auto old = cache.insert("k", filled(10, 1));
  cache.insert("k", filled(20, 2));
  CHECK(old.bytes().size() == 10);
  CHECK(old.bytes()[0] == 1);
  CHECK(cache.lookup("k").bytes().size() == 20);
  cache.erase("k");
  CHECK_FALSE(cache.contains("k"));
  CHECK(old.bytes()[0] == 1);
  CHECK(cache.stats().usage == 0);
  CHECK(cache.stats().pinned_bytes == 10 + 1 + kOverhead);
}

TEST_CASE("a zero budget caches nothing beyond what is pinned") {
  SegmentCache cache(0);
  {
    auto h = cache.insert("a", filled(10, 1));
    CHECK(h.bytes().size() == 10);
  }
  CHECK_FALSE(cache.contains("a"));
  CHECK(cache.stats().usage == 0);
}

TEST_CASE("shrinking the capacity evicts") {
  SegmentCache cache(room_for(4, 50));
  for (const char* k : {"a", "b", "c", "d"})
    cache.insert(k, filled(50, 0));
  cache.set_capacity(room_for(1, 50));
  CHECK(cache.stats().entries == 1);
  CHECK(cache.contains("d"));
}

TEST_CASE("concurrent readers and writers keep the accounting consistent") {
  const std::size_t budget = room_for(16, 512);
  SegmentCache cache(budget);
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 5000; ++i) {
        const std::string key = std::to_string((i * 7 + t) % 64);
        if (auto h = cache.lookup(key)) {
          CHECK(h.bytes().size() == 512);
        } else {
          cache.insert(key, filled(512, static_cast<std::uint8_t>(t)));
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const auto s = cache.stats();
  CHECK(s.usage <= budget);
  CHECK(s.pinned_bytes == 0);
  CHECK(s.hits + s.misses == 20000);
}

TEST_CASE("an entry is charged what its buffer holds, slack included") {
  SegmentCache cache(1 << 20);
  Bytes bytes(10, 1);
  bytes.reserve(1000);
  const std::size_t held = bytes.capacity();
  REQUIRE(held >= 1000);
  cache.insert("a", std::move(bytes));
  CHECK(cache.stats().usage == held + 1 + kOverhead);
}

TEST_CASE("a reservation shares the budget with the entries and evicts the oldest first") {
  SegmentCache cache(room_for(4, 100));
  for (const char* k : {"a", "b", "c", "d"})
    cache.insert(k, filled(100, 0));
  auto room = cache.reserve(2 * (100 + 1 + kOverhead));
  CHECK(room.bytes() == 2 * (100 + 1 + kOverhead));
  CHECK_FALSE(cache.contains("a"));
  CHECK_FALSE(cache.contains("b"));
  CHECK(cache.contains("c"));
  CHECK(cache.contains("d"));
  auto s = cache.stats();
  CHECK(s.reserved == room.bytes());
  CHECK(s.usage + s.reserved <= s.capacity);
  // While it lives, inserts stay within what is left.
  cache.insert("e", filled(100, 0));
  cache.insert("f", filled(100, 0));
  s = cache.stats();
  CHECK(s.entries == 2);
  CHECK(s.usage + s.reserved <= s.capacity);
  room.reset();
  CHECK(cache.stats().reserved == 0);
  cache.insert("g", filled(100, 0));
  cache.insert("h", filled(100, 0));
  CHECK(cache.stats().entries == 4);
}

TEST_CASE("a reservation can grow, shrink and move, and is released once") {
  SegmentCache cache(room_for(4, 100));
  for (const char* k : {"a", "b", "c", "d"})
    cache.insert(k, filled(100, 0));
  auto room = cache.reserve(0);
  CHECK(cache.stats().entries == 4);
  room.resize(3 * (100 + 1 + kOverhead));
  CHECK(cache.stats().entries == 1);
  CHECK(cache.contains("d"));
  room.resize(10);
  CHECK(cache.stats().reserved == 10);
  SegmentCache::Reservation moved = std::move(room);
  // Read after the move on purpose: the moved-from reservation holds nothing, so releases nothing.
  CHECK(room.bytes() == 0);  // NOLINT(bugprone-use-after-move,clang-analyzer-cplusplus.Move)
  CHECK(moved.bytes() == 10);
  CHECK(cache.stats().reserved == 10);
  {
    SegmentCache::Reservation other = cache.reserve(5);
    other = std::move(moved);
    CHECK(cache.stats().reserved == 10);
  }
  CHECK(cache.stats().reserved == 0);
}

TEST_CASE("a reservation larger than what can be evicted keeps pinned entries and says so") {
  SegmentCache cache(room_for(2, 100));
  auto pinned = cache.insert("a", filled(100, 0));
  cache.insert("b", filled(100, 0));
  auto room = cache.reserve(room_for(2, 100));
  CHECK(cache.contains("a"));
  CHECK_FALSE(cache.contains("b"));
  const auto s = cache.stats();
  CHECK(s.usage + s.reserved > s.capacity);
  CHECK(s.reserved == room_for(2, 100));
}

TEST_CASE("concurrent reservations and inserts keep the accounting within the budget") {
  const std::size_t budget = room_for(16, 512);
  SegmentCache cache(budget);
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, t] {
      for (int i = 0; i < 2000; ++i) {
        auto room = cache.reserve(512);
        cache.insert(std::to_string((i * 5 + t) % 64), filled(512, 0));
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const auto s = cache.stats();
  CHECK(s.reserved == 0);
  CHECK(s.usage <= budget);
  CHECK(s.pinned_bytes == 0);
}
