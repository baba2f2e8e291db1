// Accounting, grace periods, compaction and the consistency check of the store engine, and the
// operator-side views (read-only inspection, compaction requests to a running server).
#include <sqlite3.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "store/maintenance.hpp"
#include "store/store.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::Id;
using namespace splitfs::store;
using splitfs::testing::TempDir;
using namespace std::chrono_literals;

namespace {

std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Id make_id(std::uint64_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>(mix(seed * 64 + i));
  return id;
}

Bytes make_data(std::uint64_t seed, std::size_t size) {
  Bytes data(size);
  for (std::size_t i = 0; i < size; ++i)
    data[i] = static_cast<std::uint8_t>(mix(seed * 1'000'003 + i));
  return data;
}

// A share per seed, `size` bytes: 3 chunks' worth of data for the accounting.
constexpr std::size_t kShareBytes = 3000;
constexpr std::uint32_t kShareChunks = 3;

std::error_code put(Store& store, std::string_view user, std::vector<std::uint64_t> seeds) {
  std::vector<Bytes> data;
  std::vector<ShareInput> in;
  data.reserve(seeds.size());
  for (auto seed : seeds)
    data.push_back(make_data(seed, kShareBytes));
  for (std::size_t i = 0; i < seeds.size(); ++i)
    in.push_back({make_id(seeds[i]), data[i]});
  return store.put_shares(user, in);
}

std::error_code commit(Store& store, std::string_view user, std::uint64_t file,
                       std::uint64_t version, const std::vector<std::uint64_t>& seeds) {
  std::vector<ShareRef> refs;
  refs.reserve(seeds.size());
  for (auto seed : seeds)
    refs.push_back({make_id(seed), kShareChunks});
  std::vector<Id> missing;
  return store.commit(user, make_id(1'000'000 + file), version, refs,
                      splitfs::as_bytes(std::string_view("entry")),
                      splitfs::as_bytes(std::string_view("manifest")), missing);
}

bool holds(Store& store, std::string_view user, std::uint64_t seed) {
  Bytes out;
  return !store.get_share(user, make_id(seed), out) && out == make_data(seed, kShareBytes);
}

bool has(Store& store, std::string_view user, std::uint64_t seed) {
  return store.has_shares(user, std::vector<Id>{make_id(seed)}).at(0);
}

// Runs SQL on the index beside the open store (WAL lets a second connection write).
void sql(const fs::path& dir, const std::string& statement) {
  sqlite3* raw = nullptr;
  REQUIRE(sqlite3_open_v2((dir / "index.sqlite").c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr) ==
          SQLITE_OK);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> db(raw, &sqlite3_close_v2);
  sqlite3_busy_timeout(db.get(), 5000);
  char* error = nullptr;
  const int rc = sqlite3_exec(db.get(), statement.c_str(), nullptr, nullptr, &error);
  const std::string text = error ? error : "";
  sqlite3_free(error);
  INFO(text);
  REQUIRE(rc == SQLITE_OK);
}

// Makes every unreferenced share look `seconds` older.
void age_garbage(const fs::path& dir, int seconds) {
  sql(dir,
      "UPDATE shares SET touched = touched - " + std::to_string(seconds) + " WHERE refcount = 0");
}

std::vector<fs::path> pack_files(const fs::path& dir) {
  std::vector<fs::path> packs;
  for (const auto& e : fs::directory_iterator(dir / "packs"))
    packs.push_back(e.path());
  std::sort(packs.begin(), packs.end());
  return packs;
}

std::uintmax_t pack_bytes(const fs::path& dir) {
  std::uintmax_t total = 0;
  for (const auto& p : pack_files(dir))
    total += fs::file_size(p);
  return total;
}

std::vector<std::uint64_t> seeds(std::uint64_t first, std::size_t count) {
  std::vector<std::uint64_t> out;
  for (std::size_t i = 0; i < count; ++i)
    out.push_back(first + i);
  return out;
}

CheckReport checked(Store& store) {
  CheckReport report;
  REQUIRE_FALSE(store.check(report));
  INFO(describe(report));
  return report;
}

}  // namespace

TEST_CASE("usage counts files, deduplicated shares and garbage as ratios") {
  TempDir tmp("splitfs-maint");
  auto store = Store::open(tmp / "store");
  // Two files with the same four shares, a third with two of them and one of its own.
  REQUIRE_FALSE(put(*store, "u", seeds(1, 5)));
  REQUIRE_FALSE(commit(*store, "u", 1, 1, seeds(1, 4)));
  REQUIRE_FALSE(commit(*store, "u", 2, 1, seeds(1, 4)));
  REQUIRE_FALSE(commit(*store, "u", 3, 1, {1, 2, 5}));
  REQUIRE_FALSE(put(*store, "other", seeds(1, 2)));  // another user's shares count apart

  Usage u;
  REQUIRE_FALSE(store->usage("u", u));
  CHECK(u.files == 3);
  CHECK(u.shares == 5);
  CHECK(u.logical_bytes == 11 * std::uint64_t{kShareChunks} * 1024);
  CHECK(u.share_logical_bytes == 5 * std::uint64_t{kShareChunks} * 1024);
  CHECK(u.dedup_ratio() == Approx(11.0 / 5.0));
  CHECK(u.share_bytes == 5 * kShareBytes);
  CHECK(u.referenced_bytes == 11 * kShareBytes);
  CHECK(u.garbage_shares == 0);
  // Random test data: "compression" is just the chunk rounding (3 KiB of chunks per 3000 bytes).
  CHECK(u.compression_ratio() == Approx(3072.0 / 3000.0));
  CHECK(u.disk_bytes > u.share_bytes);

  REQUIRE_FALSE(store->remove_file("u", make_id(1'000'003)));
  REQUIRE_FALSE(store->usage("u", u));
  CHECK(u.files == 2);
  CHECK(u.shares == 4);
  CHECK(u.garbage_shares == 1);
  CHECK(u.garbage_bytes == kShareBytes);
  CHECK(u.dedup_ratio() == Approx(2.0));

  StoreStats stats;
  REQUIRE_FALSE(store->stats(stats));
  CHECK(stats.users == 2);
  CHECK(stats.total.garbage_shares == 3);  // one of u's, two of other's (never referenced)
  CHECK(stats.packs == 1);
  CHECK(stats.pack_bytes == stats.live_pack_bytes);
  CHECK(stats.index_bytes > 0);
  CHECK_FALSE(stats.last_compaction);
}

TEST_CASE("unreferenced shares survive their grace period and are sent again past half of it") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.garbage_grace = 1000s;
  auto store = Store::open(tmp / "store", options);
  REQUIRE_FALSE(put(*store, "u", {1, 2, 3}));
  REQUIRE_FALSE(commit(*store, "u", 1, 1, {1}));
  REQUIRE_FALSE(commit(*store, "u", 1, 2, {2}));  // 1 loses its reference; 3 never had one

  CompactionReport report;
  REQUIRE_FALSE(store->compact({}, report));
  CHECK(report.garbage_shares == 0);
  CHECK(holds(*store, "u", 1));
  CHECK(has(*store, "u", 1));
  CHECK(has(*store, "u", 3));

  age_garbage(tmp / "store", 600);  // past half the grace period: asked about, they are absent
  CHECK_FALSE(has(*store, "u", 1));
  CHECK_FALSE(has(*store, "u", 3));
  CHECK(has(*store, "u", 2));
  const auto before = pack_bytes(tmp / "store");
  REQUIRE_FALSE(put(*store, "u", {3}));  // sent again: no new record, a fresh grace period
  CHECK(pack_bytes(tmp / "store") == before);
  CHECK(has(*store, "u", 3));

  age_garbage(tmp / "store", 500);  // 1 is now 1100 s old, 3 only 500 s
  REQUIRE_FALSE(store->compact({}, report));
  CHECK(report.garbage_shares == 1);
  CHECK(report.garbage_bytes == kShareBytes);
  Bytes out;
  CHECK(store->get_share("u", make_id(1), out) == Errc::not_found);
  CHECK(holds(*store, "u", 3));
  CHECK(holds(*store, "u", 2));
  // A commit that finds its share gone says which one.
  std::vector<Id> missing;
  const std::vector<ShareRef> refs = {{make_id(1), 3}};
  CHECK(store->commit("u", make_id(5), 1, refs, {}, {}, missing) == Errc::missing_shares);
  CHECK(missing == std::vector<Id>{make_id(1)});
  CHECK(checked(*store).ok());
}

TEST_CASE("a share that loses its last reference starts a new grace period") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.garbage_grace = 1000s;
  auto store = Store::open(tmp / "store", options);
  REQUIRE_FALSE(put(*store, "u", {1}));
  REQUIRE_FALSE(commit(*store, "u", 1, 1, {1}));
  sql(tmp / "store", "UPDATE shares SET touched = touched - 100000");  // uploaded long ago
  REQUIRE_FALSE(store->remove_file("u", make_id(1'000'001)));
  CompactionReport report;
  REQUIRE_FALSE(store->compact({}, report));
  CHECK(report.garbage_shares == 0);
  CHECK(has(*store, "u", 1));  // a new file may reference it at once
  REQUIRE_FALSE(commit(*store, "u", 2, 1, {1}));
  REQUIRE_FALSE(store->compact({0s, "test", nullptr}, report));
  CHECK(report.garbage_shares == 0);
  CHECK(holds(*store, "u", 1));
}

TEST_CASE("compaction rewrites mostly dead packs and deletes empty ones") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.pack_target_bytes = 40'000;  // about 13 shares per pack
  auto store = Store::open(tmp / "store", options);
  // Five packs of 16 shares; files keep one share in four.
  for (std::uint64_t p = 0; p < 5; ++p)
    REQUIRE_FALSE(put(*store, "u", seeds(100 * p, 16)));
  std::vector<std::uint64_t> kept;
  for (std::uint64_t p = 0; p < 5; ++p) {
    for (std::uint64_t i = 0; i < 16; i += 4)
      kept.push_back(100 * p + i);
  }
  REQUIRE_FALSE(commit(*store, "u", 1, 1, kept));
  REQUIRE_FALSE(commit(*store, "u", 2, 1, {kept[0], kept[1]}));
  const auto packs_before = pack_files(tmp / "store");
  REQUIRE(packs_before.size() == 5);
  const auto bytes_before = pack_bytes(tmp / "store");

  CompactionReport report;
  REQUIRE_FALSE(store->compact({0s, "test", nullptr}, report));
  CHECK(report.garbage_shares == 80 - kept.size());
  CHECK(report.packs_rewritten >= 4);
  CHECK(report.records_moved >= 16);
  CHECK(report.disk_bytes_after < report.disk_bytes_before);
  // What is left is about the live quarter (plus headers), within one pack of slack.
  const auto bytes_after = pack_bytes(tmp / "store");
  CHECK(bytes_after < bytes_before / 2);
  for (const auto& p : packs_before) {
    if (fs::exists(p))
      CHECK(fs::file_size(p) > 0);
  }
  for (auto seed : kept)
    CHECK(holds(*store, "u", seed));
  FileInfo info;
  REQUIRE_FALSE(store->file_info("u", make_id(1'000'001), info));
  CHECK(info.shares == kept.size());
  const CheckReport check = checked(*store);
  CHECK(check.ok());
  CHECK(check.shares == kept.size());
  StoreStats stats;
  REQUIRE_FALSE(store->stats(stats));
  REQUIRE(stats.last_compaction);
  CHECK(stats.last_compaction->trigger == "test");
  CHECK(stats.last_compaction->packs_rewritten == report.packs_rewritten);

  // Everything deleted: nothing is left in the packs, and new stores still work.
  REQUIRE_FALSE(store->remove_file("u", make_id(1'000'001)));
  REQUIRE_FALSE(store->remove_file("u", make_id(1'000'002)));
  REQUIRE_FALSE(store->compact({0s, "test", nullptr}, report));
  CHECK(pack_bytes(tmp / "store") == 0);
  CHECK(checked(*store).ok());
  REQUIRE_FALSE(put(*store, "u", {7}));
  REQUIRE_FALSE(commit(*store, "u", 3, 1, {7}));
  CHECK(holds(*store, "u", 7));
}

TEST_CASE("compaction keeps what lives, also across reopening") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.pack_target_bytes = 20'000;
  {
    auto store = Store::open(tmp / "store", options);
    for (std::uint64_t p = 0; p < 4; ++p)
      REQUIRE_FALSE(put(*store, "u", seeds(10 * p, 8)));
    REQUIRE_FALSE(commit(*store, "u", 1, 1, {0, 11, 22, 33}));
    CompactionReport report;
    REQUIRE_FALSE(store->compact({0s, "test", nullptr}, report));
  }
  auto store = Store::open(tmp / "store", options);
  for (std::uint64_t seed : {0, 11, 22, 33})
    CHECK(holds(*store, "u", seed));
  CHECK(checked(*store).ok());
}

TEST_CASE("reads and writes go on while a compaction moves their records") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.pack_target_bytes = 64'000;
  auto store = Store::open(tmp / "store", options);
  constexpr std::uint64_t kPacks = 12;
  std::vector<std::uint64_t> live;
  for (std::uint64_t p = 0; p < kPacks; ++p) {
    REQUIRE_FALSE(put(*store, "u", seeds(100 * p, 20)));
    for (std::uint64_t i = 0; i < 20; i += 5)
      live.push_back(100 * p + i);
  }
  REQUIRE_FALSE(commit(*store, "u", 1, 1, live));
  // The unreferenced three quarters are old; what the writer below uploads is not.
  age_garbage(tmp / "store", 10'000);

  std::atomic<bool> done{false};
  std::atomic<int> failures{0};
  std::atomic<int> write_failures{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  readers.reserve(3);
  for (int r = 0; r < 3; ++r) {
    readers.emplace_back([&, r] {
      for (std::size_t i = static_cast<std::size_t>(r); !done; i = (i + 7) % live.size()) {
        if (!holds(*store, "u", live[i]))
          ++failures;
        ++reads;
      }
    });
  }
  std::thread writer([&] {
    for (std::uint64_t v = 2; !done; ++v) {
      if (put(*store, "u", {5000 + v}) || commit(*store, "u", 2, v, {5000 + v, live[0]}))
        ++write_failures;
    }
  });
  for (int round = 0; round < 3; ++round) {
    CompactionReport report;
    REQUIRE_FALSE(store->compact({100s, "test", nullptr}, report));
    if (round == 0)
      CHECK(report.packs_rewritten > 0);
  }
  done = true;
  for (auto& t : readers)
    t.join();
  writer.join();
  CHECK(failures == 0);
  CHECK(write_failures == 0);
  CHECK(reads > 0);
  for (auto seed : live)
    CHECK(holds(*store, "u", seed));
  CHECK(checked(*store).ok());
}

TEST_CASE("check finds damaged records, wrong refcounts and lost shares") {
  TempDir tmp("splitfs-maint");
  auto store = Store::open(tmp / "store");
  REQUIRE_FALSE(put(*store, "u", seeds(1, 6)));
  REQUIRE_FALSE(commit(*store, "u", 1, 1, seeds(1, 4)));
  REQUIRE_FALSE(commit(*store, "u", 2, 1, {1, 2}));
  CheckReport report = checked(*store);
  REQUIRE(report.ok());
  CHECK(report.files == 2);
  CHECK(report.shares == 6);
  CHECK(report.bytes_verified == 6 * kShareBytes);
  CHECK(report.notes.size() == 1);  // two unreferenced shares

  SECTION("a flipped byte in a record") {
    const fs::path pack = pack_files(tmp / "store").at(0);
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8 + 44 + 10);
    f.put('\x7f');
    f.close();
    report = checked(*store);
    CHECK(report.problem_count == 1);
    CHECK(report.problems.at(0).find("checksum") != std::string::npos);
  }
  SECTION("a refcount that disagrees with the files") {
    sql(tmp / "store", "UPDATE shares SET refcount = refcount + 1 WHERE refcount = 2");
    report = checked(*store);
    CHECK(report.problem_count == 2);
    CHECK(report.problems.at(0).find("refcount") != std::string::npos);
  }
  SECTION("a referenced share whose row is gone") {
    sql(tmp / "store", "DELETE FROM shares WHERE refcount = 1");
    report = checked(*store);
    CHECK(report.problem_count == 3);  // two shares lost, and the file's stored size is off
    CHECK(report.problems.at(0).find("lost") != std::string::npos);
    CHECK(report.problems.at(1).find("lost") != std::string::npos);
  }
  SECTION("a pack file that vanished") {
    fs::remove(pack_files(tmp / "store").at(0));
    report = checked(*store);
    CHECK(report.problem_count >= 1);
    CHECK(report.problems.at(0).find("missing") != std::string::npos);
  }
  SECTION("a pack file the index does not know is only a note") {
    // As a crash leaves one: created, written, never indexed.
    store.reset();
    std::ofstream(tmp / "store" / "packs" / "00000099.pack") << "SPLTPAK1";
    store = Store::open(tmp / "store");
    report = checked(*store);
    CHECK(report.ok());
    CHECK(report.notes.size() == 2);
    CompactionReport compaction;
    REQUIRE_FALSE(store->compact({}, compaction));
    CHECK_FALSE(fs::exists(tmp / "store" / "packs" / "00000099.pack"));
  }
}

TEST_CASE("an index of version 1 is upgraded on open") {
  TempDir tmp("splitfs-maint");
  {
    auto store = Store::open(tmp / "store");
    REQUIRE_FALSE(put(*store, "u", seeds(1, 3)));
    REQUIRE_FALSE(commit(*store, "u", 1, 1, seeds(1, 2)));
  }
  // Back to the version 1 schema, as the first release wrote it.
  sql(tmp / "store",
      "DROP INDEX shares_by_pack; DROP TABLE compactions; ALTER TABLE shares DROP COLUMN chunks; "
      "ALTER TABLE shares RENAME COLUMN touched TO created; PRAGMA user_version = 1;");
  auto store = Store::open(tmp / "store");
  Usage u;
  REQUIRE_FALSE(store->usage("u", u));
  CHECK(u.share_logical_bytes == 2 * std::uint64_t{kShareChunks} * 1024);
  CHECK(holds(*store, "u", 1));
  CHECK(checked(*store).ok());
  CompactionReport report;
  REQUIRE_FALSE(store->compact({0s, "test", nullptr}, report));
  CHECK(report.garbage_shares == 1);
}

TEST_CASE("operators inspect and compact a store that a server holds open") {
  TempDir tmp("splitfs-maint");
  Options options;
  options.garbage_grace = 1000s;
  auto store = Store::open(tmp / "store", options);
  REQUIRE_FALSE(put(*store, "u", seeds(1, 4)));
  REQUIRE_FALSE(commit(*store, "u", 1, 1, {1, 2}));
  CHECK(in_use(tmp / "store"));

  StoreStats stats;
  REQUIRE_FALSE(inspect_stats(tmp / "store", stats));
  CHECK(stats.total.files == 1);
  CHECK(stats.total.garbage_shares == 2);
  CheckReport report;
  REQUIRE_FALSE(inspect_check(tmp / "store", report, 5s));
  CHECK(report.ok());
  CHECK(report.shares == 4);

  std::vector<std::string> log;
  std::mutex log_mutex;
  {
    BackgroundCompactor compactor(*store, tmp / "store", 0s, [&](std::string_view line) {
      std::lock_guard lock(log_mutex);
      log.emplace_back(line);
    });
    CompactionReport compaction;
    REQUIRE_FALSE(request_compaction(tmp / "store", std::nullopt, 20s, compaction));
    CHECK(compaction.garbage_shares == 0);  // the server's own grace period
    REQUIRE_FALSE(request_compaction(tmp / "store", 0s, 20s, compaction));
    CHECK(compaction.garbage_shares == 2);
    CHECK(compaction.grace_seconds == 0);
  }
  CHECK(log.size() == 2);
  CHECK(holds(*store, "u", 1));
  store.reset();
  CHECK_FALSE(in_use(tmp / "store"));
}

TEST_CASE("reports read as text") {
  CompactionReport r;
  r.garbage_shares = 3;
  r.garbage_bytes = 3 << 20;
  r.disk_bytes_before = 10 << 20;
  r.disk_bytes_after = 7 << 20;
  CHECK(summary(r).find("dropped 3 unreferenced shares (3.0 MiB)") != std::string::npos);
  CHECK(describe(r).find("10.0 MiB") != std::string::npos);
  CheckReport c;
  c.problem("one");
  for (int i = 0; i < 200; ++i)
    c.problem("more");
  CHECK(c.problems.size() == CheckReport::kMaxListed);
  CHECK(describe(c).find("101 more problems") != std::string::npos);
  CHECK(describe(c).find("201 problems found") != std::string::npos);
  CHECK(human_bytes(1536) == "1.5 KiB");
}
