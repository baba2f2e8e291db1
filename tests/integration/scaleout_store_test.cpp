// The shared store (store/shared_store.hpp) on the real Swift and PostgreSQL the ctest fixture
// started: the store contract of store.hpp, then two store instances on one bucket and schema (as
// two server processes would hold them) storing, committing and compacting at the same time.
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "objectstore/s3.hpp"
#include "store/shared_store.hpp"
#include "tests/support/servers.hpp"

using namespace splitfs;
using namespace splitfs::store;
using splitfs::testing::test_engines;

namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Id make_id(std::uint64_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); i += 8) {
    const std::uint64_t v = mix(seed * 4 + i / 8);
    for (std::size_t k = 0; k < 8; ++k)
      id[i + k] = static_cast<std::uint8_t>(v >> (8 * k));
  }
  return id;
}

Bytes make_data(std::uint64_t seed, std::size_t size) {
  Bytes data(size);
  std::uint64_t state = seed;
  for (std::size_t i = 0; i < size; ++i) {
    if (i % 8 == 0)
      state = mix(state);
    data[i] = static_cast<std::uint8_t>(state >> (8 * (i % 8)));
  }
  return data;
}

Bytes text(std::string_view s) {
  return {s.begin(), s.end()};
}

// A fresh bucket and schema on the engines.
SharedLocation fresh_location() {
  const auto& engines = test_engines();
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::string name;
  {
    std::lock_guard lock(mutex);
    name = "c" + std::to_string(rng() % 1000000000000ULL);
  }
  SharedLocation location;
  std::string error;
  auto objects = objectstore::parse_location(
      "s3://" + name + "?endpoint=" + engines.s3_endpoint + "&ca=" + engines.ca_file, error);
  REQUIRE(objects);
  location.objects = *objects;
  location.credentials = objectstore::load_credentials({});
  auto index = parse_index(engines.pg_url + "?schema=" + name, error);
  REQUIRE(index);
  location.index = *index;
  return location;
}

std::error_code put(Store& store, std::string_view user, std::uint64_t first, std::size_t count,
                    std::size_t size) {
  std::vector<Bytes> data;
  std::vector<ShareInput> in;
  for (std::size_t i = 0; i < count; ++i)
    data.push_back(make_data(first + i, size + i));
  for (std::size_t i = 0; i < count; ++i)
    in.push_back({make_id(first + i), data[i]});
  return store.put_shares(user, in);
}

std::error_code commit(Store& store, std::string_view user, const Id& file, std::uint64_t version,
                       const std::vector<ShareRef>& refs, std::string_view entry = "entry") {
  std::vector<Id> missing;
  return store.commit(user, file, version, refs, as_bytes(entry), as_bytes("manifest"), missing);
}

std::size_t pack_objects(const SharedLocation& location) {
  objectstore::Client client(location.objects, location.credentials);
  std::vector<objectstore::ObjectInfo> objects;
  REQUIRE_FALSE(client.list("packs/", objects));
  return objects.size();
}

void require_clean(Store& store) {
  CheckReport report;
  REQUIRE_FALSE(store.check(report));
  INFO((report.problems.empty() ? std::string() : report.problems.front()));
  REQUIRE(report.ok());
}

}  // namespace

TEST_CASE("shared store: shares, files, versions and users as store.hpp promises",
          "[scaleout][store]") {
  const SharedLocation location = fresh_location();
  auto store = open_shared(location);

  REQUIRE_FALSE(put(*store, "alice", 1, 16, 100 << 10));
  CHECK(pack_objects(location) == 1);  // one object per batch, never one per share
  std::vector<Id> query = {make_id(1), make_id(16), make_id(999)};
  CHECK(store->has_shares("alice", query) == std::vector<bool>{true, true, false});
  CHECK(store->has_shares("bob", query) == std::vector<bool>{false, false, false});
  Bytes out;
  REQUIRE_FALSE(store->get_share("alice", make_id(5), out));
  CHECK(out == make_data(5, (100 << 10) + 4));
  CHECK(store->get_share("alice", make_id(999), out) == Errc::not_found);
  CHECK(store->get_share("bob", make_id(5), out) == Errc::not_found);

  // Idempotent: nothing new, no new object.
  REQUIRE_FALSE(put(*store, "alice", 1, 16, 100 << 10));
  CHECK(pack_objects(location) == 1);
  // An empty share is kept as empty.
  const std::vector<ShareInput> empty = {{make_id(50), ByteView{}}};
  REQUIRE_FALSE(store->put_shares("alice", empty));
  REQUIRE_FALSE(store->get_share("alice", make_id(50), out));
  CHECK(out.empty());

  const Id file = make_id(500);
  REQUIRE_FALSE(
      commit(*store, "alice", file, 5, {{make_id(1), 10}, {make_id(2), 20}, {make_id(1), 10}}));
  FileInfo info;
  REQUIRE_FALSE(store->file_info("alice", file, info));
  CHECK(info.version == 5);
  CHECK(info.shares == 3);
  CHECK(info.chunks == 40);
  CHECK(info.stored_bytes == 2 * (100 << 10) + (100 << 10) + 1);
  CHECK(commit(*store, "alice", file, 5, {{make_id(3), 1}}) == Errc::conflict);
  CHECK(commit(*store, "alice", file, 4, {{make_id(3), 1}}) == Errc::conflict);
  const std::uint64_t huge = (std::uint64_t{1} << 63) + 5;
  REQUIRE_FALSE(commit(*store, "alice", file, huge, {{make_id(1), 10}}, "big"));
  CHECK(commit(*store, "alice", file, 6, {{make_id(1), 10}}) == Errc::conflict);
  FileRecord record;
  REQUIRE_FALSE(store->get_file("alice", file, record));
  CHECK(record.version == huge);
  CHECK(record.entry == text("big"));
  CHECK(record.manifest == text("manifest"));

  // Missing shares: each once, in ref order; nothing changes.
  std::vector<Id> missing;
  const std::vector<ShareRef> refs = {
      {make_id(2), 1}, {make_id(901), 1}, {make_id(900), 1}, {make_id(901), 1}};
  CHECK(store->commit("alice", make_id(501), 1, refs, as_bytes("e"), as_bytes("m"), missing) ==
        Errc::missing_shares);
  CHECK(missing == std::vector<Id>{make_id(901), make_id(900)});
  CHECK(store->get_file("alice", make_id(501), record) == Errc::not_found);

  // A second user: same ids, separate shares.
  REQUIRE_FALSE(put(*store, "bob", 1, 2, 10));
  REQUIRE_FALSE(store->get_share("bob", make_id(1), out));
  CHECK(out == make_data(1, 10));
  REQUIRE_FALSE(commit(*store, "bob", file, 1, {{make_id(1), 1}}, "bob"));
  CHECK(store->list_files("alice").size() == 1);
  CHECK(store->list_files("bob").size() == 1);
  CHECK(store->list_files("ali").empty());

  Usage usage;
  REQUIRE_FALSE(store->usage("alice", usage));
  CHECK(usage.files == 1);
  CHECK(usage.shares == 1);
  CHECK(usage.garbage_shares == 16);
  require_clean(*store);

  REQUIRE_FALSE(store->remove_file("alice", file));
  CHECK(store->remove_file("alice", file) == Errc::not_found);
  CHECK(store->list_files("alice").empty());
  require_clean(*store);
  StoreStats stats;
  REQUIRE_FALSE(store->stats(stats));
  CHECK(stats.users == 2);
  CHECK(stats.packs == 3);
  CHECK(stats.pack_bytes > 16 * (std::uint64_t{100} << 10));
}

TEST_CASE("shared store: a damaged record reads as corrupt and check finds it",
          "[scaleout][store]") {
  const SharedLocation location = fresh_location();
  auto store = open_shared(location);
  REQUIRE_FALSE(put(*store, "u", 1, 3, 1000));
  REQUIRE_FALSE(commit(*store, "u", make_id(70), 1, {{make_id(1), 1}, {make_id(2), 1}}));
  objectstore::Client client(location.objects, location.credentials);
  std::vector<objectstore::ObjectInfo> objects;
  REQUIRE_FALSE(client.list("packs/", objects));
  REQUIRE(objects.size() == 1);
  Bytes pack;
  REQUIRE_FALSE(client.get_object(objects[0].key, pack));
  pack[pack.size() - 10] ^= 1;  // inside the last record, share 3
  const ByteView whole(pack);
  REQUIRE_FALSE(client.put_object(objects[0].key, std::span<const ByteView>(&whole, 1)));
  Bytes out;
  CHECK(store->get_share("u", make_id(3), out) == Errc::corrupt);
  REQUIRE_FALSE(store->get_share("u", make_id(2), out));
  CheckReport report;
  REQUIRE_FALSE(store->check(report));
  CHECK(report.problem_count == 1);
}

TEST_CASE("shared store: capacity refuses new shares with no_space", "[scaleout][store]") {
  const SharedLocation location = fresh_location();
  Options options;
  options.capacity_bytes = 2u << 20;
  auto store = open_shared(location, options);
  CHECK(put(*store, "u", 1, 4, 1u << 20) == Errc::no_space);
  REQUIRE_FALSE(put(*store, "u", 10, 1, 1000));
}

TEST_CASE("shared store: two instances on one store see each other's work at once",
          "[scaleout][store]") {
  const SharedLocation location = fresh_location();
  auto a = open_shared(location);
  auto b = open_shared(location);
  REQUIRE_FALSE(put(*a, "u", 1, 4, 5000));
  const std::vector<Id> ids = {make_id(1), make_id(4)};
  CHECK(b->has_shares("u", ids) == std::vector<bool>{true, true});
  Bytes out;
  REQUIRE_FALSE(b->get_share("u", make_id(3), out));
  CHECK(out == make_data(3, 5002));
  REQUIRE_FALSE(commit(*b, "u", make_id(80), 1, {{make_id(1), 1}}));
  CHECK(commit(*a, "u", make_id(80), 1, {{make_id(2), 1}}) == Errc::conflict);
  FileRecord record;
  REQUIRE_FALSE(a->get_file("u", make_id(80), record));
  CHECK(record.version == 1);
}

TEST_CASE(
    "shared store: concurrent overlapping commits and compactions through two instances "
    "keep every refcount right",
    "[scaleout][store]") {
  const SharedLocation location = fresh_location();
  Options options;
  options.garbage_grace = std::chrono::seconds(1);
  auto a = open_shared(location, options);
  auto b = open_shared(location, options);
  Store* stores[] = {a.get(), b.get()};
  constexpr int kBlocks = 24;
  for (int i = 0; i < kBlocks; ++i)
    REQUIRE_FALSE(put(*stores[i % 2], "u", 1000 + static_cast<std::uint64_t>(i), 1, 20000));

  std::mutex mutex;
  std::map<int, std::pair<std::uint64_t, std::vector<ShareRef>>> committed;  // file -> version
  std::atomic<int> failures{0};
  std::atomic<int> commits{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
      Store& store = *stores[t % 2];
      for (int round = 0; round < 40; ++round) {
        const int file = static_cast<int>(rng() % 6);
        std::vector<ShareRef> refs;
        for (int k = 0; k < 5; ++k) {
          const std::uint64_t block = 1000 + rng() % kBlocks;
          // Shares may have been dropped as garbage: put them again first, as a client would.
          if (put(store, "u", block, 1, 20000))
            ++failures;
          refs.push_back({make_id(block), 2});
        }
        const std::uint64_t version =
            static_cast<std::uint64_t>(round) * 8 + static_cast<std::uint64_t>(t) + 1;
        std::vector<Id> missing;
        const auto ec = store.commit("u", make_id(5000 + static_cast<std::uint64_t>(file)), version,
                                     refs, as_bytes("e"), as_bytes("m"), missing);
        if (!ec) {
          ++commits;
        } else if (ec != Errc::conflict && ec != Errc::missing_shares) {
          ++failures;
        }
        if (rng() % 5 == 0) {
          const auto removed =
              store.remove_file("u", make_id(5000 + static_cast<std::uint64_t>(file)));
          if (removed && removed != Errc::not_found)
            ++failures;
        }
      }
    });
  }
  // Compactions from both instances meanwhile: one at a time, the other answers busy.
  std::thread compactor([&] {
    int i = 0;
    while (!done) {
      CompactOptions options;
      options.grace = std::chrono::seconds(0);
      CompactionReport report;
      const auto ec = stores[i++ % 2]->compact(options, report);
      if (ec && ec != Errc::busy)
        ++failures;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  for (auto& thread : threads)
    thread.join();
  done = true;
  compactor.join();
  CHECK(failures == 0);
  CHECK(commits > 20);
  require_clean(*a);

  // Every file still reads back through the other instance, share by share.
  for (const auto& summary : b->list_files("u")) {
    FileRecord record;
    REQUIRE_FALSE(b->get_file("u", summary.file, record));
    FileInfo info;
    REQUIRE_FALSE(b->file_info("u", summary.file, info));
    CHECK(info.shares == 5);
  }
  for (int i = 0; i < kBlocks; ++i) {
    Bytes out;
    const auto ec = a->get_share("u", make_id(1000 + static_cast<std::uint64_t>(i)), out);
    CHECK((ec == Errc::not_found ||
           (!ec && out == make_data(1000 + static_cast<std::uint64_t>(i), 20000))));
  }
  // Removing everything and compacting leaves no share and no pack object.
  for (const auto& summary : a->list_files("u"))
    REQUIRE_FALSE(a->remove_file("u", summary.file));
  CompactOptions now;
  now.grace = std::chrono::seconds(0);
  CompactionReport report;
  REQUIRE_FALSE(b->compact(now, report));
  Usage usage;
  REQUIRE_FALSE(a->usage("u", usage));
  CHECK(usage.shares + usage.garbage_shares == 0);
  CHECK(pack_objects(location) == 0);
  require_clean(*b);
}
