// The store engine: pack files written by one writer under a mutex, an SQLite index with one write
// connection (same mutex) and a pool of read-only connections, so reads never wait for a write.
//
// Index schema (PRAGMA user_version 1):
//   packs(number, created)  every pack that ever received a record, so pack numbers never repeat.
//   shares(user, id, pack, pos, size, refcount, created)  key (user, id); pos is the record's
//     offset in packs/<pack>.pack, size the blob's length, created the put time in Unix seconds.
//     Rows with refcount 0 are garbage candidates; index shares_unreferenced(pack, created)
//     finds them.
//   files(user, id, version, shares, chunks, stored_bytes, entry, refs, manifest)  key (user, id);
//     refs is the packed list (id | chunks u32 LE) of the current version's share references, one
//     per occurrence. Large columns come last so listings never walk a manifest's overflow pages.
// Every reference occurrence adds one to its share's refcount; replacing or removing a version
// subtracts exactly what it added.
#include "store/store.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <unordered_map>

#include "store/pack.hpp"
#include "store/sqlite.hpp"

namespace splitfs::store {

namespace fs = std::filesystem;

namespace {

constexpr int kSchemaVersion = 1;
constexpr std::int64_t kApplicationId = 0x53504c54;  // "SPLT"
constexpr std::size_t kRefBytes = 32 + 4;
// Read connections kept open between requests; more are opened under load and closed after.
constexpr std::size_t kMaxIdleReaders = 16;
// Pack files kept open for reading.
constexpr std::size_t kMaxOpenPacks = 128;
// Attempts to find an unused pack name before giving up.
constexpr int kPackNameAttempts = 16;

constexpr const char* kSchema = R"sql(
CREATE TABLE packs (
  number INTEGER PRIMARY KEY,
  created INTEGER NOT NULL
);
CREATE TABLE shares (
  user TEXT NOT NULL,
  id BLOB NOT NULL,
  pack INTEGER NOT NULL,
  pos INTEGER NOT NULL,
  size INTEGER NOT NULL,
  refcount INTEGER NOT NULL DEFAULT 0 CHECK (refcount >= 0),
  created INTEGER NOT NULL,
  PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE INDEX shares_unreferenced ON shares (pack, created) WHERE refcount = 0;
CREATE TABLE files (
  user TEXT NOT NULL,
  id BLOB NOT NULL,
  version INTEGER NOT NULL,
  shares INTEGER NOT NULL,
  chunks INTEGER NOT NULL,
  stored_bytes INTEGER NOT NULL,
  entry BLOB NOT NULL,
  refs BLOB NOT NULL,
  manifest BLOB NOT NULL,
  PRIMARY KEY (user, id)
);
PRAGMA application_id = 1397771348;
PRAGMA user_version = 1;
)sql";
static_assert(kApplicationId == 1397771348);

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "splitfs.store"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::not_found:
        return "no such file or share";
      case Errc::conflict:
        return "an equal or newer version is already stored";
      case Errc::missing_shares:
        return "the commit references shares that are not stored";
      case Errc::corrupt:
        return "stored data failed verification";
      case Errc::io:
        return "storage I/O failure";
      case Errc::too_large:
        return "share too large for the store";
    }
    return "unknown store error";
  }
};

void log_failure(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "splitfs store: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
}

std::error_code io_failure(std::string_view what, std::string_view detail) {
  log_failure(what, detail);
  return Errc::io;
}

std::error_code sql_failure(sqlite3* db, std::string_view what) {
  return io_failure(what, sql::last_error(db));
}

std::error_code corrupt(std::string_view what) {
  log_failure("corrupt data", what);
  return Errc::corrupt;
}

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ByteView id_view(const Id& id) {
  return {id.data(), id.size()};
}

// A use of a statement keyed by (user, id) as ?1 and ?2, as most of the index's statements are.
class KeyedUse : public sql::Use {
 public:
  KeyedUse(const sql::Stmt& stmt, std::string_view user, const Id& id) : Use(stmt) {
    bind(1, user);
    bind(2, id_view(id));
  }
};

Bytes encode_refs(std::span<const ShareRef> refs) {
  Bytes out(refs.size() * kRefBytes);
  std::uint8_t* p = out.data();
  for (const ShareRef& ref : refs) {
    p = std::copy(ref.id.begin(), ref.id.end(), p);
    for (int i = 0; i < 4; ++i)
      *p++ = static_cast<std::uint8_t>(ref.chunks >> (8 * i));
  }
  return out;
}

Bytes copy_blob(const sql::Use& q, int column) {
  const ByteView blob = q.blob(column);
  return {blob.begin(), blob.end()};
}

// The ids of a packed refs column, sorted.
bool decode_ref_ids(ByteView blob, std::vector<Id>& ids) {
  if (blob.size() % kRefBytes != 0)
    return false;
  ids.resize(blob.size() / kRefBytes);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    std::copy_n(blob.begin() + static_cast<std::ptrdiff_t>(i * kRefBytes), 32, ids[i].begin());
  }
  std::sort(ids.begin(), ids.end());
  return true;
}

// Calls fn(id, count) once per distinct id of a sorted list.
template <typename Fn>
bool for_each_group(const std::vector<Id>& sorted, Fn&& fn) {
  for (std::size_t i = 0; i < sorted.size();) {
    std::size_t j = i + 1;
    while (j < sorted.size() && sorted[j] == sorted[i])
      ++j;
    if (!fn(sorted[i], static_cast<std::int64_t>(j - i)))
      return false;
    i = j;
  }
  return true;
}

// Reference count changes from the old sorted id list to the new one, zero deltas left out.
std::vector<std::pair<Id, std::int64_t>> ref_deltas(const std::vector<Id>& old_ids,
                                                    const std::vector<Id>& new_ids) {
  std::vector<std::pair<Id, std::int64_t>> deltas;
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < old_ids.size() || j < new_ids.size()) {
    const bool take_old = j == new_ids.size() || (i < old_ids.size() && old_ids[i] <= new_ids[j]);
    const Id id = take_old ? old_ids[i] : new_ids[j];
    std::int64_t delta = 0;
    for (; i < old_ids.size() && old_ids[i] == id; ++i)
      --delta;
    for (; j < new_ids.size() && new_ids[j] == id; ++j)
      ++delta;
    if (delta != 0)
      deltas.emplace_back(id, delta);
  }
  return deltas;
}

struct Reader {
  sql::Db db;
  sql::Stmt begin, commit, rollback, has, locate, file, list, info;
};

struct Writer {
  sql::Stmt begin, commit, rollback, share_size, insert_pack, insert_share, add_refs, file_refs,
      upsert_file, delete_file;
};

class StoreImpl;

// A read connection borrowed from the pool for one call.
class Lease {
 public:
  Lease(StoreImpl& store, std::unique_ptr<Reader> reader)
      : store_(store), reader_(std::move(reader)) {}
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  explicit operator bool() const { return reader_ != nullptr; }
  Reader* operator->() const { return reader_.get(); }
  Reader& operator*() const { return *reader_; }
  // A connection that failed is closed instead of returned to the pool.
  std::error_code failed(std::string_view what) {
    std::error_code ec = sql_failure(reader_->db.get(), what);
    broken_ = true;
    return ec;
  }

 private:
  StoreImpl& store_;
  std::unique_ptr<Reader> reader_;
  bool broken_ = false;
};

class StoreImpl final : public Store {
 public:
  StoreImpl(const fs::path& dir, const Options& options);

  std::vector<bool> has_shares(std::string_view user, std::span<const Id> ids) override;
  std::error_code put_shares(std::string_view user, std::span<const ShareInput> shares) override;
  std::error_code get_share(std::string_view user, const Id& id, Bytes& out) override;
  std::error_code commit(std::string_view user, const Id& file, std::uint64_t version,
                         std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                         std::vector<Id>& missing) override;
  std::error_code get_file(std::string_view user, const Id& file, FileRecord& out) override;
  std::vector<FileSummary> list_files(std::string_view user) override;
  std::error_code remove_file(std::string_view user, const Id& file) override;
  std::error_code file_info(std::string_view user, const Id& file, FileInfo& out) override;

  void release(std::unique_ptr<Reader> reader) {
    std::lock_guard lock(readers_mu_);
    if (idle_readers_.size() < kMaxIdleReaders)
      idle_readers_.push_back(std::move(reader));
  }

 private:
  void open_index();
  std::uint32_t highest_pack_number();
  Lease borrow_reader();
  std::unique_ptr<Reader> open_reader();
  std::shared_ptr<const pack::Fd> pack_for_reading(std::uint32_t number, std::error_code& ec);
  std::error_code ensure_pack();
  // Runs a keyed read statement (a pointer to its member of Reader) for (user, id): not_found
  // without a row, io when the read fails, otherwise whatever `row` makes of the row. The read
  // connection is back in the pool when this returns.
  template <typename Fn>
  std::error_code read_row(sql::Stmt Reader::*stmt, std::string_view user, const Id& id,
                           std::string_view what, Fn&& row);
  // Moves reference counts from the old sorted id list to the new one. Caller holds write_mu_.
  std::error_code update_refcounts(std::string_view user, const std::vector<Id>& old_ids,
                                   const std::vector<Id>& new_ids);
  fs::path pack_path(std::uint32_t number) const { return packs_dir_ / pack::file_name(number); }

  const fs::path dir_;
  const fs::path packs_dir_;
  const fs::path index_path_;
  const Options options_;
  // Declared first so it is released last: no other process touches the store while we live.
  pack::Fd lock_;

  std::mutex write_mu_;  // guards wdb_, writer_ and the current pack
  sql::Db wdb_;
  Writer writer_;
  pack::Fd pack_;
  std::uint32_t pack_number_ = 0;
  std::uint64_t pack_size_ = 0;
  std::uint32_t next_pack_ = 1;

  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Reader>> idle_readers_;

  std::mutex packs_mu_;
  std::unordered_map<std::uint32_t, std::shared_ptr<const pack::Fd>> open_packs_;
};

Lease::~Lease() {
  if (reader_ && !broken_)
    store_.release(std::move(reader_));
}

[[noreturn]] void fail_open(const fs::path& dir, std::string_view what, std::string_view detail) {
  throw StoreError("cannot open store " + dir.string() + ": " + std::string(what) + " (" +
                   std::string(detail) + ")");
}

StoreImpl::StoreImpl(const fs::path& dir, const Options& options)
    : dir_(dir), packs_dir_(dir / "packs"), index_path_(dir / "index.sqlite"), options_(options) {
  if (dir.empty())
    throw StoreError("cannot open store: no directory given");
  std::error_code ec;
  if (dir.has_parent_path())
    fs::create_directories(dir.parent_path(), ec);
  if (ec)
    fail_open(dir_, "cannot create parent directory", ec.message());
  if ((ec = pack::make_private_dir(dir_)))
    fail_open(dir_, "cannot create directory", ec.message());
  if ((ec = pack::make_private_dir(packs_dir_))) {
    fail_open(dir_, "cannot create packs directory", ec.message());
  }
  if ((ec = pack::open_file(dir_ / "LOCK", O_RDWR | O_CREAT, 0600, lock_))) {
    fail_open(dir_, "cannot open lock file", ec.message());
  }
  if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      fail_open(dir_, "in use by another process", "locked");
    fail_open(dir_, "cannot lock", std::generic_category().message(errno));
  }
  open_index();
  next_pack_ = highest_pack_number() + 1;
  if (next_pack_ > pack::kMaxNumber)
    fail_open(dir_, "pack numbers exhausted", "no free name");
  for (const fs::path& d : {dir_, packs_dir_}) {
    if ((ec = pack::sync_dir(d)))
      fail_open(dir_, "cannot sync directory", ec.message());
  }
}

void StoreImpl::open_index() {
  // Created here so the index, its WAL and its shared-memory file are private to the owner.
  pack::Fd create;
  if (auto ec = pack::open_file(index_path_, O_RDWR | O_CREAT, 0600, create)) {
    fail_open(dir_, "cannot create index", ec.message());
  }
  create.reset();

  std::string error;
  if (sql::open(index_path_.string(), SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, wdb_, error) !=
      SQLITE_OK) {
    fail_open(dir_, "cannot open index", error);
  }
  sqlite3* db = wdb_.get();
  auto pragma_value = [&](const char* statement) {
    sql::Stmt stmt;
    if (sql::prepare(db, statement, stmt) != SQLITE_OK) {
      fail_open(dir_, "cannot read index settings", sql::last_error(db));
    }
    sql::Use use(stmt);
    if (use.step() != SQLITE_ROW)
      fail_open(dir_, "cannot read index settings", sql::last_error(db));
    const unsigned char* text = sqlite3_column_text(stmt.get(), 0);
    return std::string(text ? reinterpret_cast<const char*>(text) : "");
  };
  if (pragma_value("PRAGMA journal_mode = WAL") != "wal") {
    fail_open(dir_, "cannot switch index to WAL mode", sql::last_error(db));
  }
  // FULL: a commit is durable when it returns. The journal limit trims the WAL after big manifests.
  if (sql::exec(db, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864;") !=
      SQLITE_OK) {
    fail_open(dir_, "cannot configure index", sql::last_error(db));
  }

  const int version = std::stoi(pragma_value("PRAGMA user_version"));
  if (version == 0) {
    if (sql::exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
      fail_open(dir_, "cannot create index schema", sql::last_error(db));
    }
    if (sql::exec(db, kSchema) != SQLITE_OK || sql::exec(db, "COMMIT") != SQLITE_OK) {
      std::string detail = sql::last_error(db);
      sql::exec(db, "ROLLBACK");
      fail_open(dir_, "cannot create index schema", detail);
    }
  } else if (version > kSchemaVersion) {
    fail_open(dir_, "index written by a newer version", std::to_string(version));
  } else if (std::stoll(pragma_value("PRAGMA application_id")) != kApplicationId) {
    fail_open(dir_, "not a splitfs index", "application id differs");
  }

  struct Prepared {
    sql::Stmt& stmt;
    std::string_view text;
  };
  const Prepared statements[] = {
      {writer_.begin, "BEGIN IMMEDIATE"},
      {writer_.commit, "COMMIT"},
      {writer_.rollback, "ROLLBACK"},
      {writer_.share_size, "SELECT size FROM shares WHERE user = ?1 AND id = ?2"},
      {writer_.insert_pack, "INSERT OR IGNORE INTO packs (number, created) VALUES (?1, ?2)"},
      {writer_.insert_share,
       "INSERT INTO shares (user, id, pack, pos, size, refcount, created) "
       "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)"},
      {writer_.add_refs, "UPDATE shares SET refcount = refcount + ?3 WHERE user = ?1 AND id = ?2"},
      {writer_.file_refs, "SELECT version, refs FROM files WHERE user = ?1 AND id = ?2"},
      {writer_.upsert_file,
       "INSERT INTO files (user, id, version, shares, chunks, stored_bytes, entry, refs, manifest) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (user, id) DO UPDATE SET "
       "version = excluded.version, shares = excluded.shares, chunks = excluded.chunks, "
       "stored_bytes = excluded.stored_bytes, entry = excluded.entry, refs = excluded.refs, "
       "manifest = excluded.manifest"},
      {writer_.delete_file, "DELETE FROM files WHERE user = ?1 AND id = ?2"},
  };
  for (const Prepared& p : statements) {
    if (sql::prepare(db, p.text, p.stmt) != SQLITE_OK) {
      fail_open(dir_, "cannot prepare index statements", sql::last_error(db));
    }
  }
}

std::uint32_t StoreImpl::highest_pack_number() {
  // Both the directory and the index count: a pack must never be reused even if one side lost it.
  std::uint32_t highest = 0;
  std::error_code ec;
  for (fs::directory_iterator it(packs_dir_, ec), end; !ec && it != end; it.increment(ec)) {
    if (auto number = pack::parse_file_name(it->path().filename().string())) {
      highest = std::max(highest, *number);
    }
  }
  if (ec)
    fail_open(dir_, "cannot list packs", ec.message());
  sql::Stmt stmt;
  if (sql::prepare(wdb_.get(), "SELECT max(number) FROM packs", stmt) != SQLITE_OK) {
    fail_open(dir_, "cannot read index", sql::last_error(wdb_.get()));
  }
  sql::Use use(stmt);
  if (use.step() != SQLITE_ROW)
    fail_open(dir_, "cannot read index", sql::last_error(wdb_.get()));
  const std::int64_t indexed = use.int64(0);
  if (indexed < 0 || indexed > pack::kMaxNumber) {
    fail_open(dir_, "index names an impossible pack", std::to_string(indexed));
  }
  return std::max(highest, static_cast<std::uint32_t>(indexed));
}

std::unique_ptr<Reader> StoreImpl::open_reader() {
  auto reader = std::make_unique<Reader>();
  std::string error;
  if (sql::open(index_path_.string(), SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, reader->db,
                error) != SQLITE_OK) {
    io_failure("cannot open index for reading", error);
    return nullptr;
  }
  struct Prepared {
    sql::Stmt& stmt;
    std::string_view text;
  };
  const Prepared statements[] = {
      {reader->begin, "BEGIN"},
      {reader->commit, "COMMIT"},
      {reader->rollback, "ROLLBACK"},
      {reader->has, "SELECT 1 FROM shares WHERE user = ?1 AND id = ?2"},
      {reader->locate, "SELECT pack, pos, size FROM shares WHERE user = ?1 AND id = ?2"},
      {reader->file, "SELECT version, entry, manifest FROM files WHERE user = ?1 AND id = ?2"},
      {reader->list, "SELECT id, version, entry FROM files WHERE user = ?1 ORDER BY id"},
      {reader->info,
       "SELECT version, shares, chunks, stored_bytes FROM files WHERE user = ?1 AND id = ?2"},
  };
  for (const Prepared& p : statements) {
    if (sql::prepare(reader->db.get(), p.text, p.stmt) != SQLITE_OK) {
      sql_failure(reader->db.get(), "cannot prepare read statements");
      return nullptr;
    }
  }
  return reader;
}

Lease StoreImpl::borrow_reader() {
  {
    std::lock_guard lock(readers_mu_);
    if (!idle_readers_.empty()) {
      std::unique_ptr<Reader> reader = std::move(idle_readers_.back());
      idle_readers_.pop_back();
      return Lease(*this, std::move(reader));
    }
  }
  return Lease(*this, open_reader());
}

std::shared_ptr<const pack::Fd> StoreImpl::pack_for_reading(std::uint32_t number,
                                                            std::error_code& ec) {
  {
    std::lock_guard lock(packs_mu_);
    if (auto it = open_packs_.find(number); it != open_packs_.end())
      return it->second;
  }
  pack::Fd fd;
  if ((ec = pack::open_file(pack_path(number), O_RDONLY, 0, fd)))
    return nullptr;
  auto opened = std::make_shared<const pack::Fd>(std::move(fd));
  std::lock_guard lock(packs_mu_);
  if (open_packs_.size() >= kMaxOpenPacks)
    open_packs_.erase(open_packs_.begin());
  return open_packs_.emplace(number, std::move(opened)).first->second;
}

std::error_code StoreImpl::ensure_pack() {
  if (pack_ && pack_size_ < options_.pack_target_bytes)
    return {};
  pack_.reset();
  // O_EXCL: a new pack is always a new file, never the tail of one a crash may have torn.
  for (int attempt = 0; attempt < kPackNameAttempts; ++attempt) {
    if (next_pack_ > pack::kMaxNumber)
      return io_failure("cannot create pack", "numbers exhausted");
    const std::uint32_t number = next_pack_++;
    pack::Fd fd;
    std::error_code ec = pack::open_file(pack_path(number), O_WRONLY | O_CREAT | O_EXCL, 0600, fd);
    if (ec == std::errc::file_exists)
      continue;
    if (ec)
      return io_failure("cannot create pack", ec.message());
    if ((ec = pack::sync_dir(packs_dir_)))
      return io_failure("cannot sync packs", ec.message());
    pack_ = std::move(fd);
    pack_number_ = number;
    pack_size_ = 0;
    return {};
  }
  return io_failure("cannot create pack", "no unused name");
}

template <typename Fn>
std::error_code StoreImpl::read_row(sql::Stmt Reader::*stmt, std::string_view user, const Id& id,
                                    std::string_view what, Fn&& row) {
  Lease reader = borrow_reader();
  if (!reader)
    return Errc::io;
  KeyedUse q((*reader).*stmt, user, id);
  const int rc = q.step();
  if (rc == SQLITE_DONE)
    return Errc::not_found;
  if (rc != SQLITE_ROW)
    return reader.failed(what);
  row(q);
  return {};
}

std::error_code StoreImpl::update_refcounts(std::string_view user, const std::vector<Id>& old_ids,
                                            const std::vector<Id>& new_ids) {
  for (const auto& [id, delta] : ref_deltas(old_ids, new_ids)) {
    KeyedUse q(writer_.add_refs, user, id);
    q.bind(3, delta);
    if (q.step() != SQLITE_DONE)
      return sql_failure(wdb_.get(), "cannot update references");
  }
  return {};
}

std::vector<bool> StoreImpl::has_shares(std::string_view user, std::span<const Id> ids) {
  std::vector<bool> held(ids.size(), false);
  if (ids.empty())
    return held;
  Lease reader = borrow_reader();
  if (!reader)
    return held;
  sql::Transaction tx(reader->begin, reader->commit, reader->rollback);
  if (tx.begin_rc() != SQLITE_DONE) {
    reader.failed("cannot begin read");
    return held;
  }
  for (std::size_t i = 0; i < ids.size(); ++i) {
    KeyedUse q(reader->has, user, ids[i]);
    const int rc = q.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      reader.failed("cannot look up shares");
      return held;
    }
    held[i] = rc == SQLITE_ROW;
  }
  tx.commit();
  return held;
}

std::error_code StoreImpl::put_shares(std::string_view user, std::span<const ShareInput> shares) {
  for (const ShareInput& share : shares) {
    if (share.data.size() > pack::kMaxBlobBytes)
      return Errc::too_large;
  }
  if (shares.empty())
    return {};

  // Checksums need no lock; the writer only decides which records to append.
  std::vector<pack::RecordHeader> headers;
  headers.reserve(shares.size());
  for (const ShareInput& share : shares)
    headers.push_back(pack::make_header(share.id, share.data));
  // First occurrence of each id within the batch.
  std::vector<std::size_t> order(shares.size());
  for (std::size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return shares[a].id < shares[b].id; });
  order.erase(
      std::unique(order.begin(), order.end(),
                  [&](std::size_t a, std::size_t b) { return shares[a].id == shares[b].id; }),
      order.end());
  std::sort(order.begin(), order.end());

  std::lock_guard lock(write_mu_);
  sqlite3* db = wdb_.get();
  sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
  if (tx.begin_rc() != SQLITE_DONE)
    return sql_failure(db, "cannot begin put");

  std::vector<std::size_t> fresh;
  for (std::size_t i : order) {
    KeyedUse q(writer_.share_size, user, shares[i].id);
    const int rc = q.step();
    if (rc == SQLITE_DONE)
      fresh.push_back(i);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      return sql_failure(db, "cannot look up shares");
  }
  if (fresh.empty())
    return {};

  if (auto ec = ensure_pack())
    return ec;
  std::vector<iovec> iov;
  iov.reserve(2 * fresh.size() + 1);
  std::vector<std::uint64_t> positions;
  positions.reserve(fresh.size());
  std::uint64_t end = pack_size_;
  if (pack_size_ == 0) {
    iov.push_back({const_cast<std::uint8_t*>(pack::kFileMagic.data()), pack::kFileHeaderSize});
    end += pack::kFileHeaderSize;
  }
  for (std::size_t i : fresh) {
    iov.push_back({headers[i].data(), headers[i].size()});
    iov.push_back({const_cast<std::uint8_t*>(shares[i].data.data()), shares[i].data.size()});
    positions.push_back(end);
    end += pack::kRecordHeaderSize + shares[i].data.size();
  }
  std::error_code ec = pack::write_all(pack_.get(), iov, pack_size_);
  if (!ec)
    ec = pack::sync_data(pack_.get());
  if (ec) {
    // The pack's tail is now unknown; later records go to a fresh pack.
    pack_.reset();
    return io_failure("cannot write pack", ec.message());
  }
  pack_size_ = end;

  const std::int64_t created = now_seconds();
  {
    sql::Use q(writer_.insert_pack);
    q.bind(1, std::int64_t{pack_number_});
    q.bind(2, created);
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot index pack");
  }
  for (std::size_t k = 0; k < fresh.size(); ++k) {
    const ShareInput& share = shares[fresh[k]];
    KeyedUse q(writer_.insert_share, user, share.id);
    q.bind(3, std::int64_t{pack_number_});
    q.bind(4, static_cast<std::int64_t>(positions[k]));
    q.bind(5, static_cast<std::int64_t>(share.data.size()));
    q.bind(6, created);
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot index shares");
  }
  if (tx.commit() != SQLITE_DONE)
    return sql_failure(db, "cannot commit put");
  return {};
}

std::error_code StoreImpl::get_share(std::string_view user, const Id& id, Bytes& out) {
  out.clear();
  std::int64_t number = 0;
  std::int64_t pos = 0;
  std::int64_t size = 0;
  auto locate = [&](const sql::Use& q) {
    number = q.int64(0);
    pos = q.int64(1);
    size = q.int64(2);
  };
  if (auto ec = read_row(&Reader::locate, user, id, "cannot look up share", locate))
    return ec;
  if (number < 1 || number > pack::kMaxNumber ||
      pos < static_cast<std::int64_t>(pack::kFileHeaderSize) || size < 0 ||
      size > static_cast<std::int64_t>(pack::kMaxBlobBytes)) {
    return corrupt("index entry out of range");
  }
  std::error_code ec;
  auto fd = pack_for_reading(static_cast<std::uint32_t>(number), ec);
  if (ec == std::errc::no_such_file_or_directory)
    return corrupt("pack file missing");
  if (ec)
    return io_failure("cannot open pack", ec.message());

  pack::RecordHeader header{};
  out.resize(static_cast<std::size_t>(size));
  iovec iov[2] = {{header.data(), header.size()}, {out.data(), out.size()}};
  bool short_read = false;
  if ((ec = pack::read_all(fd->get(), iov, static_cast<std::uint64_t>(pos), short_read))) {
    out.clear();
    return io_failure("cannot read pack", ec.message());
  }
  if (short_read || !pack::check_record(header, id, out)) {
    out.clear();
    return corrupt(short_read ? "record beyond end of pack" : "record failed its check");
  }
  return {};
}

std::error_code StoreImpl::commit(std::string_view user, const Id& file, std::uint64_t version,
                                  std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                                  std::vector<Id>& missing) {
  missing.clear();
  std::vector<Id> new_ids(refs.size());
  std::uint64_t chunks = 0;
  for (std::size_t i = 0; i < refs.size(); ++i) {
    new_ids[i] = refs[i].id;
    chunks += refs[i].chunks;
  }
  std::sort(new_ids.begin(), new_ids.end());
  const Bytes refs_blob = encode_refs(refs);

  std::lock_guard lock(write_mu_);
  sqlite3* db = wdb_.get();
  sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
  if (tx.begin_rc() != SQLITE_DONE)
    return sql_failure(db, "cannot begin commit");

  std::vector<Id> old_ids;
  {
    KeyedUse q(writer_.file_refs, user, file);
    const int rc = q.step();
    if (rc == SQLITE_ROW) {
      if (version <= static_cast<std::uint64_t>(q.int64(0)))
        return Errc::conflict;
      if (!decode_ref_ids(q.blob(1), old_ids))
        return corrupt("file references malformed");
    } else if (rc != SQLITE_DONE) {
      return sql_failure(db, "cannot read file");
    }
  }

  std::uint64_t stored_bytes = 0;
  std::vector<Id> absent;  // sorted
  std::error_code lookup_error;
  for_each_group(new_ids, [&](const Id& id, std::int64_t count) {
    KeyedUse q(writer_.share_size, user, id);
    const int rc = q.step();
    if (rc == SQLITE_ROW) {
      stored_bytes += static_cast<std::uint64_t>(q.int64(0)) * static_cast<std::uint64_t>(count);
    } else if (rc == SQLITE_DONE) {
      absent.push_back(id);
    } else {
      lookup_error = sql_failure(db, "cannot look up shares");
      return false;
    }
    return true;
  });
  if (lookup_error)
    return lookup_error;
  if (!absent.empty()) {
    // Report each missing id once, in the order the refs name them.
    std::vector<bool> reported(absent.size(), false);
    for (const ShareRef& ref : refs) {
      auto it = std::lower_bound(absent.begin(), absent.end(), ref.id);
      if (it == absent.end() || *it != ref.id)
        continue;
      const auto index = static_cast<std::size_t>(it - absent.begin());
      if (reported[index])
        continue;
      reported[index] = true;
      missing.push_back(ref.id);
    }
    return Errc::missing_shares;
  }

  if (auto ec = update_refcounts(user, old_ids, new_ids))
    return ec;

  {
    KeyedUse q(writer_.upsert_file, user, file);
    q.bind(3, static_cast<std::int64_t>(version));
    q.bind(4, static_cast<std::int64_t>(refs.size()));
    q.bind(5, static_cast<std::int64_t>(chunks));
    q.bind(6, static_cast<std::int64_t>(stored_bytes));
    q.bind(7, entry);
    q.bind(8, ByteView(refs_blob));
    q.bind(9, manifest);
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot write file");
  }
  if (tx.commit() != SQLITE_DONE)
    return sql_failure(db, "cannot commit file");
  return {};
}

std::error_code StoreImpl::get_file(std::string_view user, const Id& file, FileRecord& out) {
  return read_row(&Reader::file, user, file, "cannot read file", [&](const sql::Use& q) {
    out.version = static_cast<std::uint64_t>(q.int64(0));
    out.entry = copy_blob(q, 1);
    out.manifest = copy_blob(q, 2);
  });
}

std::vector<FileSummary> StoreImpl::list_files(std::string_view user) {
  std::vector<FileSummary> files;
  Lease reader = borrow_reader();
  if (!reader)
    return files;
  sql::Use q(reader->list);
  q.bind(1, user);
  int rc;
  while ((rc = q.step()) == SQLITE_ROW) {
    const ByteView id = q.blob(0);
    if (id.size() != std::tuple_size_v<Id>) {
      corrupt("file id malformed");
      continue;
    }
    FileSummary& summary = files.emplace_back();
    std::copy(id.begin(), id.end(), summary.file.begin());
    summary.version = static_cast<std::uint64_t>(q.int64(1));
    summary.entry = copy_blob(q, 2);
  }
  if (rc != SQLITE_DONE)
    reader.failed("cannot list files");
  return files;
}

std::error_code StoreImpl::remove_file(std::string_view user, const Id& file) {
  std::lock_guard lock(write_mu_);
  sqlite3* db = wdb_.get();
  sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
  if (tx.begin_rc() != SQLITE_DONE)
    return sql_failure(db, "cannot begin remove");
  std::vector<Id> old_ids;
  {
    KeyedUse q(writer_.file_refs, user, file);
    const int rc = q.step();
    if (rc == SQLITE_DONE)
      return Errc::not_found;
    if (rc != SQLITE_ROW)
      return sql_failure(db, "cannot read file");
    if (!decode_ref_ids(q.blob(1), old_ids))
      return corrupt("file references malformed");
  }
  if (auto ec = update_refcounts(user, old_ids, {}))
    return ec;
  {
    KeyedUse q(writer_.delete_file, user, file);
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot delete file");
  }
  if (tx.commit() != SQLITE_DONE)
    return sql_failure(db, "cannot commit remove");
  return {};
}

std::error_code StoreImpl::file_info(std::string_view user, const Id& file, FileInfo& out) {
  return read_row(&Reader::info, user, file, "cannot read file", [&](const sql::Use& q) {
    out.version = static_cast<std::uint64_t>(q.int64(0));
    out.shares = static_cast<std::uint64_t>(q.int64(1));
    out.chunks = static_cast<std::uint64_t>(q.int64(2));
    out.stored_bytes = static_cast<std::uint64_t>(q.int64(3));
  });
}

}  // namespace

const std::error_category& store_category() {
  static const Category category;
  return category;
}

std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), store_category()};
}

std::unique_ptr<Store> Store::open(const fs::path& dir, const Options& options) {
  return std::make_unique<StoreImpl>(dir, options);
}

}  // namespace splitfs::store
