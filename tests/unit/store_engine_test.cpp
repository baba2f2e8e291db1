#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "store/store.hpp"
#include "tests/support/files.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::Id;
using namespace splitfs::store;
using splitfs::testing::read_bytes;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;

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

// Shares built from seeds: id and content both derive from the seed.
struct Batch {
  std::vector<Id> ids;
  std::vector<Bytes> data;
  std::vector<ShareInput> inputs() const {
    std::vector<ShareInput> in;
    for (std::size_t i = 0; i < ids.size(); ++i)
      in.push_back({ids[i], data[i]});
    return in;
  }
};

Batch make_batch(std::uint64_t first_seed, std::size_t count, std::size_t size) {
  Batch b;
  for (std::size_t i = 0; i < count; ++i) {
    b.ids.push_back(make_id(first_seed + i));
    b.data.push_back(make_data(first_seed + i, size + i));
  }
  return b;
}

std::error_code put(Store& store, std::string_view user, const Batch& batch) {
  const auto in = batch.inputs();
  return store.put_shares(user, in);
}

std::error_code commit(Store& store, std::string_view user, const Id& file, std::uint64_t version,
                       const std::vector<ShareRef>& refs, std::string_view entry = "entry",
                       std::string_view manifest = "manifest") {
  std::vector<Id> missing;
  return store.commit(user, file, version, refs, splitfs::as_bytes(entry),
                      splitfs::as_bytes(manifest), missing);
}

// Reads a share's reference count straight from the index; nullopt if the row does not exist.
std::optional<std::int64_t> refcount(const fs::path& dir, std::string_view user, const Id& id) {
  sqlite3* raw = nullptr;
  const std::string path = (dir / "index.sqlite").string();
  REQUIRE(sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close_v2)> db(raw, &sqlite3_close_v2);
  sqlite3_stmt* stmt_raw = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(), "SELECT refcount FROM shares WHERE user = ?1 AND id = ?2",
                             -1, &stmt_raw, nullptr) == SQLITE_OK);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(stmt_raw, &sqlite3_finalize);
  sqlite3_bind_text(stmt.get(), 1, user.data(), static_cast<int>(user.size()), SQLITE_TRANSIENT);
  sqlite3_bind_blob(stmt.get(), 2, id.data(), static_cast<int>(id.size()), SQLITE_TRANSIENT);
  const int rc = sqlite3_step(stmt.get());
  if (rc == SQLITE_DONE)
    return std::nullopt;
  REQUIRE(rc == SQLITE_ROW);
  return sqlite3_column_int64(stmt.get(), 0);
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

// The offset of `needle` in the pack that holds it.
std::pair<fs::path, std::size_t> locate(const fs::path& dir, const Bytes& needle) {
  for (const auto& p : pack_files(dir)) {
    const Bytes content = read_bytes(p);
    auto it = std::search(content.begin(), content.end(), needle.begin(), needle.end());
    if (it != content.end())
      return {p, static_cast<std::size_t>(it - content.begin())};
  }
  FAIL("blob not found in any pack");
  return {};
}

}  // namespace

TEST_CASE("shares round trip through put, has and get") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(1, 16, 128 << 10);
  REQUIRE_FALSE(put(*store, "alice", batch));

  std::vector<Id> query = batch.ids;
  query.push_back(make_id(999));
  const auto held = store->has_shares("alice", query);
  REQUIRE(held.size() == query.size());
  for (std::size_t i = 0; i < batch.ids.size(); ++i)
    CHECK(held[i]);
  CHECK_FALSE(held.back());

  for (std::size_t i = 0; i < batch.ids.size(); ++i) {
    Bytes out;
    REQUIRE_FALSE(store->get_share("alice", batch.ids[i], out));
    CHECK(out == batch.data[i]);
  }
  Bytes out = text("stale");
  CHECK(store->get_share("alice", make_id(999), out) == Errc::not_found);
  CHECK(out.empty());
  CHECK(store->has_shares("alice", {}).empty());
  CHECK_FALSE(store->put_shares("alice", {}));
}

TEST_CASE("empty shares, entries and manifests are kept as empty, not absent") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Id id = make_id(5);
  const std::vector<ShareInput> in = {{id, ByteView{}}};
  REQUIRE_FALSE(store->put_shares("u", in));
  Bytes out = text("x");
  REQUIRE_FALSE(store->get_share("u", id, out));
  CHECK(out.empty());
  REQUIRE_FALSE(commit(*store, "u", make_id(6), 1, {{id, 0}}, "", ""));
  FileRecord record;
  REQUIRE_FALSE(store->get_file("u", make_id(6), record));
  CHECK(record.version == 1);
  CHECK(record.entry.empty());
  CHECK(record.manifest.empty());
}

TEST_CASE("put is idempotent across calls and within one batch") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(10, 4, 1000);
  REQUIRE_FALSE(put(*store, "u", batch));
  const auto size_after_first = pack_bytes(tmp / "store");
  REQUIRE(size_after_first > 4000);

  REQUIRE_FALSE(put(*store, "u", batch));
  CHECK(pack_bytes(tmp / "store") == size_after_first);

  // A batch naming one new id twice stores it once; the first occurrence wins.
  const Id fresh = make_id(77);
  const Bytes first = make_data(1, 300);
  const Bytes second = make_data(2, 300);
  const std::vector<ShareInput> dup = {
      {fresh, first}, {batch.ids[0], batch.data[0]}, {fresh, second}};
  REQUIRE_FALSE(store->put_shares("u", dup));
  Bytes out;
  REQUIRE_FALSE(store->get_share("u", fresh, out));
  CHECK(out == first);
  const auto growth = pack_bytes(tmp / "store") - size_after_first;
  CHECK(growth >= 300);
  CHECK(growth < 600);
}

TEST_CASE("commit, get_file, list_files and file_info") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(100, 3, 500);  // sizes 500, 501, 502
  REQUIRE_FALSE(put(*store, "u", batch));
  const Id file_b = make_id(2000);
  const Id file_a = make_id(1000);
  const std::vector<ShareRef> refs = {{batch.ids[0], 10}, {batch.ids[1], 20}, {batch.ids[2], 7}};

  REQUIRE_FALSE(commit(*store, "u", file_b, 3, refs, "entry-b", "manifest-b"));
  REQUIRE_FALSE(commit(*store, "u", file_a, 1, {refs[0]}, "entry-a", "manifest-a"));

  FileRecord record;
  REQUIRE_FALSE(store->get_file("u", file_b, record));
  CHECK(record.version == 3);
  CHECK(record.entry == text("entry-b"));
  CHECK(record.manifest == text("manifest-b"));

  const auto files = store->list_files("u");
  REQUIRE(files.size() == 2);
  CHECK(files[0].file < files[1].file);
  for (const auto& f : files) {
    CHECK(f.version == (f.file == file_b ? 3u : 1u));
    CHECK(f.entry == text(f.file == file_b ? "entry-b" : "entry-a"));
  }

  FileInfo info;
  REQUIRE_FALSE(store->file_info("u", file_b, info));
  CHECK(info.version == 3);
  CHECK(info.shares == 3);
  CHECK(info.chunks == 37);
  CHECK(info.stored_bytes == 500 + 501 + 502);

  // A share referenced twice counts twice.
  REQUIRE_FALSE(commit(*store, "u", file_a, 2, {refs[1], refs[1], refs[2]}));
  REQUIRE_FALSE(store->file_info("u", file_a, info));
  CHECK(info.version == 2);
  CHECK(info.shares == 3);
  CHECK(info.chunks == 47);
  CHECK(info.stored_bytes == 501 + 501 + 502);

  CHECK(store->get_file("u", make_id(1), record) == Errc::not_found);
  CHECK(store->file_info("u", make_id(1), info) == Errc::not_found);
  CHECK(store->list_files("nobody").empty());
}

TEST_CASE("commit of an equal or older version is a conflict and changes nothing") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(1, 2, 64);
  REQUIRE_FALSE(put(*store, "u", batch));
  const Id file = make_id(500);
  REQUIRE_FALSE(commit(*store, "u", file, 5, {{batch.ids[0], 1}}, "e5", "m5"));

  CHECK(commit(*store, "u", file, 5, {{batch.ids[1], 1}}, "e5b", "m5b") == Errc::conflict);
  CHECK(commit(*store, "u", file, 4, {{batch.ids[1], 1}}, "e4", "m4") == Errc::conflict);

  FileRecord record;
  REQUIRE_FALSE(store->get_file("u", file, record));
  CHECK(record.version == 5);
  CHECK(record.manifest == text("m5"));
  CHECK(refcount(tmp / "store", "u", batch.ids[0]) == 1);
  CHECK(refcount(tmp / "store", "u", batch.ids[1]) == 0);

  // Versions above 2^63 still order as unsigned numbers.
  const std::uint64_t huge = (std::uint64_t{1} << 63) + 5;
  REQUIRE_FALSE(commit(*store, "u", file, huge, {{batch.ids[0], 1}}));
  CHECK(commit(*store, "u", file, 6, {{batch.ids[0], 1}}) == Errc::conflict);
  REQUIRE_FALSE(store->get_file("u", file, record));
  CHECK(record.version == huge);
}

TEST_CASE("commit with unheld refs reports each missing id once, in ref order") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(1, 2, 64);
  REQUIRE_FALSE(put(*store, "u", batch));
  const Id gone_a = make_id(900);
  const Id gone_b = make_id(901);
  const Id file = make_id(42);
  const std::vector<ShareRef> refs = {
      {batch.ids[0], 1}, {gone_b, 1}, {batch.ids[1], 1}, {gone_a, 1}, {gone_b, 1}};
  std::vector<Id> missing = {make_id(12345)};
  const auto ec =
      store->commit("u", file, 1, refs, splitfs::as_bytes("e"), splitfs::as_bytes("m"), missing);
  CHECK(ec == Errc::missing_shares);
  CHECK(missing == std::vector<Id>{gone_b, gone_a});

  FileRecord record;
  CHECK(store->get_file("u", file, record) == Errc::not_found);
  CHECK(refcount(tmp / "store", "u", batch.ids[0]) == 0);

  // Once the shares arrive the same commit succeeds and `missing` is cleared.
  const Bytes a = text("a");
  const Bytes b = text("b");
  const std::vector<ShareInput> later = {{gone_a, a}, {gone_b, b}};
  REQUIRE_FALSE(store->put_shares("u", later));
  REQUIRE_FALSE(
      store->commit("u", file, 1, refs, splitfs::as_bytes("e"), splitfs::as_bytes("m"), missing));
  CHECK(missing.empty());
  CHECK(refcount(tmp / "store", "u", gone_b) == 2);
}

TEST_CASE("reference counts follow versions and removal") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Batch batch = make_batch(1, 4, 100);
  REQUIRE_FALSE(put(*store, "u", batch));
  const auto& ids = batch.ids;
  const Id file = make_id(300);
  const Id other = make_id(301);
  auto counts = [&] {
    std::vector<std::int64_t> c;
    c.reserve(ids.size());
    for (const Id& id : ids)
      c.push_back(refcount(tmp / "store", "u", id).value_or(-1));
    return c;
  };
  CHECK(counts() == std::vector<std::int64_t>{0, 0, 0, 0});

  REQUIRE_FALSE(commit(*store, "u", file, 1, {{ids[0], 1}, {ids[1], 1}, {ids[0], 1}}));
  CHECK(counts() == std::vector<std::int64_t>{2, 1, 0, 0});

  REQUIRE_FALSE(commit(*store, "u", other, 1, {{ids[1], 1}, {ids[2], 1}}));
  CHECK(counts() == std::vector<std::int64_t>{2, 2, 1, 0});

  // The new version drops ids[0] once and ids[1], adds ids[3].
  REQUIRE_FALSE(commit(*store, "u", file, 2, {{ids[0], 1}, {ids[3], 1}}));
  CHECK(counts() == std::vector<std::int64_t>{1, 1, 1, 1});

  REQUIRE_FALSE(store->remove_file("u", file));
  CHECK(counts() == std::vector<std::int64_t>{0, 1, 1, 0});
  CHECK(store->remove_file("u", file) == Errc::not_found);
  FileRecord record;
  CHECK(store->get_file("u", file, record) == Errc::not_found);

  REQUIRE_FALSE(store->remove_file("u", other));
  CHECK(counts() == std::vector<std::int64_t>{0, 0, 0, 0});
  CHECK(store->list_files("u").empty());

  // Unreferenced shares are kept (no garbage collection yet) and a removed file can come back.
  Bytes out;
  REQUIRE_FALSE(store->get_share("u", ids[2], out));
  CHECK(out == batch.data[2]);
  REQUIRE_FALSE(commit(*store, "u", file, 1, {{ids[2], 1}}));
  CHECK(counts() == std::vector<std::int64_t>{0, 0, 1, 0});
}

TEST_CASE("users are isolated from each other") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Id shared_id = make_id(1);
  const Bytes alice_data = make_data(10, 400);
  const Bytes bob_data = make_data(20, 400);
  REQUIRE_FALSE(store->put_shares("alice", std::vector<ShareInput>{{shared_id, alice_data}}));

  const std::vector<Id> query = {shared_id};
  CHECK(store->has_shares("bob", query) == std::vector<bool>{false});
  Bytes out;
  CHECK(store->get_share("bob", shared_id, out) == Errc::not_found);
  CHECK(commit(*store, "bob", make_id(50), 1, {{shared_id, 1}}) == Errc::missing_shares);

  // The same id under bob is a separate share with its own content and count.
  REQUIRE_FALSE(store->put_shares("bob", std::vector<ShareInput>{{shared_id, bob_data}}));
  REQUIRE_FALSE(store->get_share("bob", shared_id, out));
  CHECK(out == bob_data);
  REQUIRE_FALSE(store->get_share("alice", shared_id, out));
  CHECK(out == alice_data);

  const Id file = make_id(60);
  REQUIRE_FALSE(commit(*store, "alice", file, 7, {{shared_id, 1}}, "alice-entry"));
  CHECK(refcount(tmp / "store", "alice", shared_id) == 1);
  CHECK(refcount(tmp / "store", "bob", shared_id) == 0);
  FileRecord record;
  CHECK(store->get_file("bob", file, record) == Errc::not_found);
  FileInfo info;
  CHECK(store->file_info("bob", file, info) == Errc::not_found);
  CHECK(store->list_files("bob").empty());
  CHECK(store->remove_file("bob", file) == Errc::not_found);
  // Bob may have his own file under the same id and an unrelated version.
  REQUIRE_FALSE(commit(*store, "bob", file, 1, {{shared_id, 1}}, "bob-entry"));
  REQUIRE_FALSE(store->get_file("alice", file, record));
  CHECK(record.version == 7);
  CHECK(record.entry == text("alice-entry"));
  // A user name that is a prefix of another is a different user.
  CHECK(store->list_files("ali").empty());
}

TEST_CASE("a reopened store sees everything and writes to a new pack") {
  TempDir tmp("splitfs-store");
  const Batch batch = make_batch(1, 5, 3000);
  const Id file = make_id(77);
  {
    auto store = Store::open(tmp / "store");
    REQUIRE_FALSE(put(*store, "u", batch));
    REQUIRE_FALSE(commit(*store, "u", file, 9, {{batch.ids[0], 2}, {batch.ids[4], 3}}, "e", "m"));
    CHECK_THROWS_AS(Store::open(tmp / "store"), StoreError);  // one process at a time
  }
  const auto packs_before = pack_files(tmp / "store");
  REQUIRE(packs_before.size() == 1);
  const auto size_before = fs::file_size(packs_before[0]);

  auto store = Store::open(tmp / "store");
  for (std::size_t i = 0; i < batch.ids.size(); ++i) {
    Bytes out;
    REQUIRE_FALSE(store->get_share("u", batch.ids[i], out));
    CHECK(out == batch.data[i]);
  }
  FileInfo info;
  REQUIRE_FALSE(store->file_info("u", file, info));
  CHECK(info.version == 9);
  CHECK(info.chunks == 5);
  CHECK(info.stored_bytes == 3000 + 3004);
  CHECK(refcount(tmp / "store", "u", batch.ids[4]) == 1);
  CHECK(store->list_files("u").size() == 1);

  const Batch more = make_batch(50, 2, 100);
  REQUIRE_FALSE(put(*store, "u", more));
  const auto packs_after = pack_files(tmp / "store");
  REQUIRE(packs_after.size() == 2);
  CHECK(fs::file_size(packs_after[0]) == size_before);
  Bytes out;
  REQUIRE_FALSE(store->get_share("u", more.ids[1], out));
  CHECK(out == more.data[1]);
}

TEST_CASE("store files are private to their owner") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  REQUIRE_FALSE(put(*store, "u", make_batch(1, 1, 10)));
  auto mode = [](const fs::path& p) {
    struct stat st {};
    REQUIRE(::stat(p.c_str(), &st) == 0);
    return st.st_mode & 0777;
  };
  CHECK(mode(tmp / "store") == 0700);
  CHECK(mode(tmp / "store" / "packs") == 0700);
  CHECK(mode(tmp / "store" / "index.sqlite") == 0600);
  CHECK(mode(pack_files(tmp / "store").at(0)) == 0600);
}

TEST_CASE("a damaged pack record reads as corrupt, its neighbours do not") {
  TempDir tmp("splitfs-store");
  const Batch batch = make_batch(1, 3, 2048);
  auto store = Store::open(tmp / "store");
  REQUIRE_FALSE(put(*store, "u", batch));

  const auto [pack, offset] = locate(tmp / "store", batch.data[1]);
  Bytes content = read_bytes(pack);

  SECTION("a flipped byte in the blob") {
    content[offset + 1000] ^= 0x20;
  }
  SECTION("a flipped byte in the header's id") {
    content[offset - 40 + 3] ^= 0x01;
  }
  SECTION("a flipped byte in the header's checksum") {
    content[offset - 1] ^= 0x80;
  }
  write_file(pack, content);

  Bytes out;
  CHECK(store->get_share("u", batch.ids[1], out) == Errc::corrupt);
  CHECK(out.empty());
  REQUIRE_FALSE(store->get_share("u", batch.ids[0], out));
  CHECK(out == batch.data[0]);
  REQUIRE_FALSE(store->get_share("u", batch.ids[2], out));
  CHECK(out == batch.data[2]);
}

TEST_CASE("a torn pack tail does not break reopening") {
  TempDir tmp("splitfs-store");
  const Batch batch = make_batch(1, 3, 5000);
  {
    auto store = Store::open(tmp / "store");
    REQUIRE_FALSE(put(*store, "u", batch));
    REQUIRE_FALSE(commit(*store, "u", make_id(9), 1, {{batch.ids[2], 1}}));
  }
  const fs::path pack = pack_files(tmp / "store").at(0);

  SECTION("half a record appended after the last indexed one") {
    Bytes content = read_bytes(pack);
    const Bytes torn(content.end() - 5046, content.end() - 2000);
    content.insert(content.end(), torn.begin(), torn.end());
    write_file(pack, content);

    auto store = Store::open(tmp / "store");
    for (std::size_t i = 0; i < batch.ids.size(); ++i) {
      Bytes out;
      REQUIRE_FALSE(store->get_share("u", batch.ids[i], out));
      CHECK(out == batch.data[i]);
    }
    const Batch more = make_batch(40, 2, 700);
    REQUIRE_FALSE(put(*store, "u", more));
    Bytes out;
    REQUIRE_FALSE(store->get_share("u", more.ids[0], out));
    CHECK(out == more.data[0]);
    CHECK(fs::file_size(pack) == content.size());
  }

  SECTION("the last indexed record cut short") {
    fs::resize_file(pack, fs::file_size(pack) - 100);
    auto store = Store::open(tmp / "store");
    Bytes out;
    CHECK(store->get_share("u", batch.ids[2], out) == Errc::corrupt);
    REQUIRE_FALSE(store->get_share("u", batch.ids[0], out));
    CHECK(out == batch.data[0]);
    FileInfo info;
    REQUIRE_FALSE(store->file_info("u", make_id(9), info));
    CHECK(info.shares == 1);
  }

  SECTION("a pack file that vanished") {
    fs::remove(pack);
    auto store = Store::open(tmp / "store");
    Bytes out;
    CHECK(store->get_share("u", batch.ids[0], out) == Errc::corrupt);
    // The lost pack's number is not reused: its index rows still point at it.
    REQUIRE_FALSE(put(*store, "u", make_batch(60, 1, 10)));
    CHECK(store->get_share("u", batch.ids[0], out) == Errc::corrupt);
  }
}

TEST_CASE("packs roll over past the target size") {
  TempDir tmp("splitfs-store");
  Options options;
  options.pack_target_bytes = 10000;
  auto store = Store::open(tmp / "store", options);
  std::vector<Batch> batches;
  for (int b = 0; b < 6; ++b) {
    batches.push_back(make_batch(100 * (static_cast<std::uint64_t>(b) + 1), 2, 3000));
    REQUIRE_FALSE(put(*store, "u", batches.back()));
  }
  const auto packs = pack_files(tmp / "store");
  CHECK(packs.size() == 3);  // two 6 KiB batches per pack: the second passes the target
  for (const auto& batch : batches) {
    for (std::size_t i = 0; i < batch.ids.size(); ++i) {
      Bytes out;
      REQUIRE_FALSE(store->get_share("u", batch.ids[i], out));
      CHECK(out == batch.data[i]);
    }
  }
}

TEST_CASE("oversized shares are refused") {
  TempDir tmp("splitfs-store");
  auto store = Store::open(tmp / "store");
  const Bytes big((64u << 20) + 1, 0);
  const std::vector<ShareInput> in = {{make_id(1), big}};
  CHECK(store->put_shares("u", in) == Errc::too_large);
  CHECK(store->has_shares("u", std::vector<Id>{make_id(1)}) == std::vector<bool>{false});
}

TEST_CASE("error codes carry readable messages") {
  const std::error_code ec = Errc::missing_shares;
  CHECK(std::string(ec.category().name()) == "splitfs.store");
  CHECK(ec.message().find("shares") != std::string::npos);
  CHECK(std::error_code(Errc::corrupt).message() != std::error_code(Errc::io).message());
}

TEST_CASE("a store that cannot be opened throws StoreError") {
  TempDir tmp("splitfs-store");
  const fs::path file = tmp.path() / "plain-file";
  write_file(file, text("not a directory"));
  CHECK_THROWS_AS(Store::open(file), StoreError);
  CHECK_THROWS_AS(Store::open(file / "below"), StoreError);
}

TEST_CASE("concurrent puts, gets and commits stay correct") {
  TempDir tmp("splitfs-store");
  Options options;
  options.pack_target_bytes = 256 << 10;  // several packs while threads read
  auto store = Store::open(tmp / "store", options);
  constexpr int kWriters = 4;
  constexpr int kBatches = 25;
  constexpr int kPerBatch = 4;
  constexpr std::size_t kSize = 8192;
  // Seeds: writer w, batch b, item i -> distinct; item 0 of every batch is shared by all writers.
  auto seed_of = [](int w, int b, int i) -> std::uint64_t {
    return i == 0 ? 1'000'000u + b : static_cast<std::uint64_t>(w * 100'000 + b * 10 + i);
  };
  std::atomic<int> published[kWriters] = {};
  std::atomic<bool> done{false};
  std::atomic<int> failures{0};

  std::vector<std::thread> threads;
  threads.reserve(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int b = 0; b < kBatches; ++b) {
        Batch batch;
        std::vector<ShareRef> refs;
        for (int i = 0; i < kPerBatch; ++i) {
          const auto seed = seed_of(w, b, i);
          batch.ids.push_back(make_id(seed));
          batch.data.push_back(make_data(seed, kSize));
          refs.push_back({batch.ids.back(), 8});
        }
        if (put(*store, "u", batch))
          ++failures;
        if (commit(*store, "u", make_id(50'000 + w), static_cast<std::uint64_t>(b) + 1, refs)) {
          ++failures;
        }
        published[w] = b + 1;
      }
    });
  }
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(static_cast<unsigned>(r));
      while (!done) {
        const int w = static_cast<int>(rng() % kWriters);
        const int upto = published[w];
        if (upto == 0)
          continue;
        const int b = static_cast<int>(rng() % static_cast<unsigned>(upto));
        const int i = static_cast<int>(rng() % kPerBatch);
        const auto seed = seed_of(w, b, i);
        Bytes out;
        if (store->get_share("u", make_id(seed), out) || out != make_data(seed, kSize))
          ++failures;
        if (!store->has_shares("u", std::vector<Id>{make_id(seed)}).at(0))
          ++failures;
        FileInfo info;
        if (store->file_info("u", make_id(50'000 + w), info) || info.shares != kPerBatch) {
          ++failures;
        }
      }
    });
  }
  for (int w = 0; w < kWriters; ++w)
    threads[static_cast<std::size_t>(w)].join();
  done = true;
  for (std::size_t t = kWriters; t < threads.size(); ++t)
    threads[t].join();
  CHECK(failures == 0);

  CHECK(store->list_files("u").size() == kWriters);
  for (int w = 0; w < kWriters; ++w) {
    FileInfo info;
    REQUIRE_FALSE(store->file_info("u", make_id(50'000 + w), info));
    CHECK(info.version == kBatches);
    CHECK(info.chunks == std::uint64_t{8} * kPerBatch);
    // Only the last batch stays referenced: its shared share once per writer, the rest once.
    CHECK(refcount(tmp / "store", "u", make_id(seed_of(w, kBatches - 1, 1))) == 1);
    CHECK(refcount(tmp / "store", "u", make_id(seed_of(w, 0, 1))) == 0);
  }
  CHECK(refcount(tmp / "store", "u", make_id(seed_of(0, kBatches - 1, 0))) == kWriters);
  for (int w = 0; w < kWriters; ++w) {
    for (int b = 0; b < kBatches; ++b) {
      for (int i = 0; i < kPerBatch; ++i) {
        const auto seed = seed_of(w, b, i);
        Bytes out;
        REQUIRE_FALSE(store->get_share("u", make_id(seed), out));
        REQUIRE(out == make_data(seed, kSize));
      }
    }
  }
}
