// The store engine: pack files written by one writer under a mutex, an SQLite index with one write
// connection (same mutex) and a pool of read-only connections, so reads never wait for a write.
//
// Index schema (PRAGMA user_version 2; a version 1 index is migrated on open):
//   packs(number, created)  every pack that ever received a record, so pack numbers never repeat
//     (rows stay after compaction deletes the file).
//   shares(user, id, pack, pos, size, refcount, touched, chunks)  key (user, id); pos is the
//     record's offset in packs/<pack>.pack, size the blob's length, touched the last put of the
//     share or the moment it lost its last reference (Unix seconds), chunks the 1 KiB chunks it
//     carries (from the references; 0 until one exists). Rows with refcount 0 are garbage once
//     touched is older than the grace period; shares_unreferenced(pack, touched) finds them, and
//     shares_by_pack(pack, pos) lists a pack's records in file order.
//   files(user, id, version, shares, chunks, stored_bytes, entry, refs, manifest)  key (user, id);
//     refs is the packed list (id | chunks u32 LE) of the current version's share references, one
//     per occurrence. Large columns come last so listings never walk a manifest's overflow pages.
//   compactions(id, started, finished, grace, ...)  the last runs of compact() and what each did.
// Every reference occurrence adds one to its share's refcount; replacing or removing a version
// subtracts exactly what it added.
//
// Compaction and readers: a record moves only to a new pack, whose data is synced before the rows
// move in one transaction; the old pack is unlinked after that. A reader that looked a share up
// just before the move and finds the old pack gone looks it up again.
//
// Group commit: puts, commits and removals are parts of write groups. The parts that queue while a
// group is being written make up the next group, which runs them in one index transaction (each
// in a savepoint, so a part that fails takes back only its own changes), syncs the pack data they
// appended once, then commits once (one sync of the index log). Every part's caller hears its
// outcome only after that: a reply still means the data and the index rows are on disk, and
// readers still see only what is on disk, but concurrent writers share the syncs.
#include "store/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "store/inspect.hpp"
#include "store/pack.hpp"
#include "store/refs.hpp"
#include "store/sqlite.hpp"

namespace splitfs::store {

namespace fs = std::filesystem;

namespace {

using detail::decode_refs;
using detail::encode_refs;
using detail::kRefBytes;

constexpr int kSchemaVersion = 2;
constexpr std::int64_t kApplicationId = 0x53504c54;  // "SPLT"
// Read connections kept open between requests; more are opened under load and closed after.
constexpr std::size_t kMaxIdleReaders = 16;
// Pack files kept open for reading.
constexpr std::size_t kMaxOpenPacks = 128;
// Attempts to find an unused pack name before giving up.
constexpr int kPackNameAttempts = 16;
// Lookups of a share that compaction moved meanwhile, before giving up.
constexpr int kMovedShareAttempts = 3;
// Garbage rows dropped per transaction, so stores and commits never wait long for compaction.
constexpr int kGarbageBatch = 2048;
// The most parts one write group takes, so that one index transaction stays short.
constexpr std::size_t kMaxGroupParts = 64;
// A compaction copies records in pieces of about this size.
constexpr std::size_t kCopyBytes = 8u << 20;
// Shares this large are a large file's bytes (a 128 KiB segment makes two of 64 KiB, less when it
// compresses), written without staying in the page cache (pack::Caching::drop_behind). Reading
// them back caches them as usual. Small files' shares, a few KiB, stay cached from the start for
// the many small reads that come back for them.
constexpr std::size_t kBulkShareBytes = 16u << 10;
// How long a compaction waits for an operator's check of the store to finish.
constexpr auto kMaintenanceWait = std::chrono::seconds(1);

// Set before the first table exists: lets compaction hand free index pages back to the disk.
constexpr const char* kNewIndexSettings = "PRAGMA auto_vacuum = INCREMENTAL;";

constexpr const char* kCompactionsTable = R"sql(
CREATE TABLE compactions (
  id INTEGER PRIMARY KEY,
  trigger TEXT NOT NULL,
  started INTEGER NOT NULL,
  finished INTEGER NOT NULL,
  grace INTEGER NOT NULL,
  garbage_shares INTEGER NOT NULL,
  garbage_bytes INTEGER NOT NULL,
  packs_rewritten INTEGER NOT NULL,
  packs_deleted INTEGER NOT NULL,
  records_moved INTEGER NOT NULL,
  bytes_moved INTEGER NOT NULL,
  disk_before INTEGER NOT NULL,
  disk_after INTEGER NOT NULL
);
)sql";

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
  touched INTEGER NOT NULL,
  chunks INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE INDEX shares_unreferenced ON shares (pack, touched) WHERE refcount = 0;
CREATE INDEX shares_by_pack ON shares (pack, pos);
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
PRAGMA user_version = 2;
)sql";

// Version 1 to 2: touched replaces created (same values: the put time), chunks are filled in from
// the files' references by the caller, and the compaction history starts.
constexpr const char* kMigrateFrom1 = R"sql(
ALTER TABLE shares RENAME COLUMN created TO touched;
ALTER TABLE shares ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
CREATE INDEX shares_by_pack ON shares (pack, pos);
PRAGMA user_version = 2;
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
      case Errc::busy:
        return "another maintenance task holds the store";
      case Errc::no_space:
        return "out of storage space";
      case Errc::quota_exceeded:
        return "the user's quota would be exceeded";
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

// SQLITE_FULL is the disk (or the index's own size limit) being full: a transaction that hit it
// rolls back whole.
std::error_code sql_failure(sqlite3* db, std::string_view what) {
  if (sqlite3_errcode(db) == SQLITE_FULL) {
    log_failure(what, sql::last_error(db));
    return Errc::no_space;
  }
  return io_failure(what, sql::last_error(db));
}

bool is_no_space(const std::error_code& ec) {
  return ec == std::errc::no_space_on_device ||
         ec == std::error_code(EDQUOT, std::system_category());
}

// A pack or directory write that failed: no_space when the disk is full, io otherwise.
std::error_code disk_failure(std::string_view what, const std::error_code& ec) {
  if (is_no_space(ec)) {
    log_failure(what, ec.message());
    return Errc::no_space;
  }
  return io_failure(what, ec.message());
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

struct Reader {
  sql::Db db;
  sql::Stmt begin, commit, rollback, has, locate, file, list, info;
};

struct Writer {
  sql::Stmt begin, commit, rollback, savepoint, release, rollback_to, share_size, touch,
      insert_pack, insert_share, add_refs, file_refs, upsert_file, delete_file, drop_garbage,
      move_share, pack_usage;
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
  std::error_code put_shares(std::string_view user, std::span<const ShareInput> shares) override {
    bool refused = false;
    const std::error_code ec = put_new_shares(user, shares, refused);
    if (ec == Errc::no_space && !refused)
      out_of_space();
    return ec;
  }
  std::error_code get_share(std::string_view user, const Id& id, Bytes& out) override;
  std::error_code commit(std::string_view user, const Id& file, std::uint64_t version,
                         std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                         std::vector<Id>& missing) override {
    const std::error_code ec = commit_version(user, file, version, refs, entry, manifest, missing);
    if (ec == Errc::no_space)
      out_of_space();
    return ec;
  }
  // One write group for the whole batch (up to kMaxGroupParts commits each): one sync.
  void commit_batch(std::string_view user, std::span<const CommitInput> commits,
                    std::uint64_t quota, std::span<std::error_code> results) override;
  std::error_code get_file(std::string_view user, const Id& file, FileRecord& out) override;
  std::vector<FileSummary> list_files(std::string_view user) override {
    std::vector<FileSummary> files;
    list_files(user, files);
    return files;
  }
  std::error_code list_files(std::string_view user, std::vector<FileSummary>& out) override;
  // A removal that found the disk full is tried once more, in the space the reserve gave back.
  std::error_code remove_file(std::string_view user, const Id& file) override {
    std::error_code ec = remove_one(user, file);
    if (ec == Errc::no_space) {
      out_of_space();
      ec = remove_one(user, file);
    }
    return ec;
  }
  std::error_code file_info(std::string_view user, const Id& file, FileInfo& out) override;
  std::error_code usage(std::string_view user, Usage& out) override;
  std::error_code stats(StoreStats& out) override;
  // Like a removal, a compaction that found the disk full runs once more.
  std::error_code compact(const CompactOptions& options, CompactionReport& out) override {
    std::error_code ec = compact_once(options, out);
    if (ec == Errc::no_space) {
      out_of_space();
      ec = compact_once(options, out);
    }
    std::lock_guard lock(write_mu_);
    pack_bytes_ = pack_bytes_on_disk();
    return ec;
  }
  std::error_code check(CheckReport& out) override;

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
  // Makes a new, empty pack file under a number never used before. Caller holds write_mu_.
  std::error_code create_pack(std::uint32_t& number, pack::Fd& fd);
  // In a write group: a pack to append to, and the current pack put aside (synced first if the
  // group appended to it; a failed sync fails the group).
  std::error_code ensure_pack();
  void retire_pack();
  // Group commit (see the top of this file). A part runs with write_mu_ held inside the group's
  // transaction and returns its outcome; run_part returns once the group that ran it is durable.
  using Part = std::function<std::error_code()>;
  struct Queued {
    const Part* part;
    std::error_code result;
    bool done = false;
  };
  std::error_code run_part(const Part& part);
  // The same for several parts at once (they may share groups); one result each.
  void run_parts(std::span<const Part> parts, std::span<std::error_code> results);
  void write_group(std::span<Queued* const> group);
  // Runs parts from `next` on in one transaction; returns the index of the first part it left.
  std::size_t write_round(std::span<Queued* const> group, std::size_t next);
  std::error_code put_new_shares(std::string_view user, std::span<const ShareInput> shares,
                                 bool& refused);
  std::error_code commit_version(std::string_view user, const Id& file, std::uint64_t version,
                                 std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                                 std::vector<Id>& missing);
  // A commit's work outside the write group (sorting and encoding its references), then its part.
  struct PreparedCommit {
    std::vector<Id> new_ids;  // sorted
    std::uint64_t chunks = 0;
    Bytes refs_blob;
  };
  static PreparedCommit prepare_commit(std::span<const ShareRef> refs);
  Part commit_part(const CommitInput& commit, std::string_view user, const PreparedCommit& prepared,
                   std::vector<Id>& missing);
  std::error_code remove_one(std::string_view user, const Id& file);
  std::error_code compact_once(const CompactOptions& options, CompactionReport& out);
  // Space. Whether `bytes` more pack data may be written now: no_space while the disk is known to
  // be full and the reserve cannot be taken back, or past the capacity. Caller holds write_mu_.
  std::error_code admit_data(std::uint64_t bytes);
  // The disk was found full: give the reserve back and refuse new data until it can be retaken.
  void out_of_space();
  // Takes the reserve's space (again); false if the disk has not that much free.
  bool take_reserve();
  std::uint64_t pack_bytes_on_disk();
  // Runs a keyed read statement (a pointer to its member of Reader) for (user, id): not_found
  // without a row, io when the read fails, otherwise whatever `row` makes of the row. The read
  // connection is back in the pool when this returns.
  template <typename Fn>
  std::error_code read_row(sql::Stmt Reader::*stmt, std::string_view user, const Id& id,
                           std::string_view what, Fn&& row);
  // Moves reference counts from the old sorted id list to the new one; `refs` (the new version's
  // references) give the chunk counts. Caller holds write_mu_.
  std::error_code update_refcounts(std::string_view user, const std::vector<Id>& old_ids,
                                   const std::vector<Id>& new_ids, std::span<const ShareRef> refs);
  fs::path pack_path(std::uint32_t number) const { return packs_dir_ / pack::file_name(number); }
  void forget_pack(std::uint32_t number);
  std::error_code migrate_from_1();
  // Compaction steps; compact_mu_ is held.
  std::error_code drop_garbage(std::int64_t cutoff, CompactionReport& out);
  std::error_code rewrite_packs(const std::vector<std::uint32_t>& victims,
                                const std::function<bool()>& stopping, CompactionReport& out);
  std::error_code delete_pack(std::uint32_t number);
  std::error_code record_compaction(const CompactionReport& report);
  std::uint64_t disk_bytes();

  const fs::path dir_;
  const fs::path packs_dir_;
  const fs::path index_path_;
  const Options options_;
  // Declared first so it is released last: no other process touches the store while we live.
  pack::Fd lock_;

  std::mutex compact_mu_;  // one compaction or check at a time; taken before write_mu_
  std::mutex write_mu_;    // guards wdb_, writer_, the current pack and the group being written

  std::mutex group_mu_;  // guards queued_ and leading_; never held with write_mu_
  std::condition_variable group_cv_;
  std::deque<Queued*> queued_;
  bool leading_ = false;  // a caller is writing a group
  // Of the group being written (write_mu_): pack bytes appended since the last sync, and a failure
  // that fails the group's current transaction (a pack put aside could not be synced).
  bool pack_unsynced_ = false;
  std::error_code group_error_;
  sql::Db wdb_;
  Writer writer_;
  pack::Fd pack_;
  std::uint32_t pack_number_ = 0;
  std::uint64_t pack_size_ = 0;
  std::uint32_t next_pack_ = 1;
  std::uint64_t pack_bytes_ = 0;  // size of all pack files, kept up to date under write_mu_

  std::mutex space_mu_;  // guards the reserve file; taken after write_mu_
  std::atomic<bool> full_{false};

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
  pack_bytes_ = pack_bytes_on_disk();
  if (!take_reserve()) {
    full_ = true;
    log_failure("out of space",
                "the reserve cannot be taken; new data is refused until there is "
                "room for it");
  }
}

std::uint64_t StoreImpl::pack_bytes_on_disk() {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> packs;
  detail::list_packs(dir_, packs);
  std::uint64_t total = 0;
  for (const auto& [number, size] : packs)
    total += size;
  return total;
}

bool StoreImpl::take_reserve() {
  if (options_.reserve_file.empty() || options_.reserve_bytes == 0)
    return true;
  std::lock_guard lock(space_mu_);
  pack::Fd fd;
  if (pack::open_file(options_.reserve_file, O_WRONLY | O_CREAT, 0600, fd))
    return false;
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 &&
      static_cast<std::uint64_t>(st.st_blocks) * 512 >= options_.reserve_bytes)
    return true;
  if (::posix_fallocate(fd.get(), 0, static_cast<off_t>(options_.reserve_bytes)) == 0)
    return true;
  // Whatever part was taken goes back: a half reserve helps nobody and holds space.
  ::unlink(options_.reserve_file.c_str());
  return false;
}

void StoreImpl::out_of_space() {
  if (full_.exchange(true))
    return;
  log_failure("out of space",
              "new data is refused until space is freed (remove files, then "
              "compact) or the disk has room again");
  if (!options_.reserve_file.empty()) {
    std::lock_guard lock(space_mu_);
    ::unlink(options_.reserve_file.c_str());
  }
}

std::error_code StoreImpl::admit_data(std::uint64_t bytes) {
  if (full_) {
    if (!take_reserve())
      return Errc::no_space;
    full_ = false;
    log_failure("space", "the reserve is taken back; new data is accepted again");
  }
  if (options_.capacity_bytes != 0) {
    const std::uint64_t used = pack_bytes_ + detail::index_bytes(dir_);
    if (used + bytes > options_.capacity_bytes) {
      log_failure("capacity reached", std::to_string(used) + " bytes in use, " +
                                          std::to_string(bytes) + " more refused, capacity " +
                                          std::to_string(options_.capacity_bytes));
      return Errc::no_space;
    }
  }
  return {};
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
  const int version = std::stoi(pragma_value("PRAGMA user_version"));
  // Only a new, empty database that is not yet in WAL mode takes this setting.
  if (version == 0 && sql::exec(db, kNewIndexSettings) != SQLITE_OK)
    fail_open(dir_, "cannot configure index", sql::last_error(db));
  if (pragma_value("PRAGMA journal_mode = WAL") != "wal") {
    fail_open(dir_, "cannot switch index to WAL mode", sql::last_error(db));
  }
  // FULL: a commit is durable when it returns. The journal limit trims the WAL after a checkpoint,
  // so a big manifest does not leave a big log on disk.
  if (sql::exec(db, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 8388608;") !=
      SQLITE_OK) {
    fail_open(dir_, "cannot configure index", sql::last_error(db));
  }

  if (version == 0) {
    if (sql::exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
      fail_open(dir_, "cannot create index schema", sql::last_error(db));
    }
    if (sql::exec(db, kSchema) != SQLITE_OK || sql::exec(db, kCompactionsTable) != SQLITE_OK ||
        sql::exec(db, "COMMIT") != SQLITE_OK) {
      std::string detail = sql::last_error(db);
      sql::exec(db, "ROLLBACK");
      fail_open(dir_, "cannot create index schema", detail);
    }
  } else if (version > kSchemaVersion) {
    fail_open(dir_, "index written by a newer version", std::to_string(version));
  } else if (std::stoll(pragma_value("PRAGMA application_id")) != kApplicationId) {
    fail_open(dir_, "not a splitfs index", "application id differs");
  } else if (version == 1) {
    if (migrate_from_1())
      fail_open(dir_, "cannot upgrade the index from version 1", sql::last_error(db));
  }

  struct Prepared {
    sql::Stmt& stmt;
    std::string_view text;
  };
  const Prepared statements[] = {
      {writer_.begin, "BEGIN IMMEDIATE"},
      {writer_.commit, "COMMIT"},
      {writer_.rollback, "ROLLBACK"},
      {writer_.savepoint, "SAVEPOINT part"},
      {writer_.release, "RELEASE part"},
      {writer_.rollback_to, "ROLLBACK TO part"},
      {writer_.share_size, "SELECT size, refcount FROM shares WHERE user = ?1 AND id = ?2"},
      {writer_.touch, "UPDATE shares SET touched = ?3 WHERE user = ?1 AND id = ?2"},
      {writer_.insert_pack, "INSERT OR IGNORE INTO packs (number, created) VALUES (?1, ?2)"},
      {writer_.insert_share,
       "INSERT INTO shares (user, id, pack, pos, size, refcount, touched) "
       "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)"},
      // A share that loses its last reference starts its grace period; a new reference records
      // how many chunks the share carries.
      {writer_.add_refs,
       "UPDATE shares SET refcount = refcount + ?3, "
       "touched = CASE WHEN refcount + ?3 = 0 THEN ?4 ELSE touched END, "
       "chunks = CASE WHEN ?5 >= 0 THEN ?5 ELSE chunks END WHERE user = ?1 AND id = ?2"},
      {writer_.file_refs, "SELECT version, refs FROM files WHERE user = ?1 AND id = ?2"},
      {writer_.upsert_file,
       "INSERT INTO files (user, id, version, shares, chunks, stored_bytes, entry, refs, manifest) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (user, id) DO UPDATE SET "
       "version = excluded.version, shares = excluded.shares, chunks = excluded.chunks, "
       "stored_bytes = excluded.stored_bytes, entry = excluded.entry, refs = excluded.refs, "
       "manifest = excluded.manifest"},
      {writer_.delete_file, "DELETE FROM files WHERE user = ?1 AND id = ?2"},
      {writer_.drop_garbage,
       "DELETE FROM shares WHERE (user, id) IN (SELECT user, id FROM shares "
       "WHERE refcount = 0 AND touched <= ?1 LIMIT ?2) RETURNING size"},
      {writer_.move_share,
       "UPDATE shares SET pack = ?3, pos = ?4 WHERE user = ?1 AND id = ?2 AND pack = ?5 AND "
       "pos = ?6"},
      {writer_.pack_usage, "SELECT count(*), coalesce(sum(size), 0) FROM shares WHERE pack = ?1"},
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
      {reader->has, "SELECT refcount, touched FROM shares WHERE user = ?1 AND id = ?2"},
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

std::error_code StoreImpl::create_pack(std::uint32_t& number, pack::Fd& fd) {
  // O_EXCL: a new pack is always a new file, never the tail of one a crash may have torn.
  for (int attempt = 0; attempt < kPackNameAttempts; ++attempt) {
    if (next_pack_ > pack::kMaxNumber)
      return io_failure("cannot create pack", "numbers exhausted");
    number = next_pack_++;
    std::error_code ec = pack::open_file(pack_path(number), O_WRONLY | O_CREAT | O_EXCL, 0600, fd);
    if (ec == std::errc::file_exists)
      continue;
    if (ec)
      return disk_failure("cannot create pack", ec);
    if ((ec = pack::sync_dir(packs_dir_)))
      return disk_failure("cannot sync packs", ec);
    return {};
  }
  return io_failure("cannot create pack", "no unused name");
}

void StoreImpl::retire_pack() {
  if (pack_ && pack_unsynced_) {
    if (std::error_code ec = pack::sync_data(pack_.get()))
      group_error_ = disk_failure("cannot sync pack", ec);
  }
  pack_unsynced_ = false;
  pack_.reset();
}

std::error_code StoreImpl::ensure_pack() {
  if (pack_ && pack_size_ < options_.pack_target_bytes)
    return {};
  retire_pack();
  if (group_error_)
    return group_error_;
  std::uint32_t number = 0;
  pack::Fd fd;
  if (auto ec = create_pack(number, fd))
    return ec;
  pack_ = std::move(fd);
  pack_number_ = number;
  pack_size_ = 0;
  return {};
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
                                            const std::vector<Id>& new_ids,
                                            std::span<const ShareRef> refs) {
  const auto deltas = ref_deltas(old_ids, new_ids);
  std::map<Id, std::uint32_t> chunks;
  for (const ShareRef& ref : refs)
    chunks.emplace(ref.id, ref.chunks);
  const std::int64_t now = now_seconds();
  for (const auto& [id, delta] : deltas) {
    KeyedUse q(writer_.add_refs, user, id);
    q.bind(3, delta);
    q.bind(4, now);
    const auto it = chunks.find(id);
    q.bind(5, delta > 0 && it != chunks.end() ? std::int64_t{it->second} : std::int64_t{-1});
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
  // Garbage past half its grace period counts as absent: the client sends it again, which
  // restarts its grace period, rather than count on a share compaction may drop before the commit.
  const std::int64_t fresh_since = now_seconds() - options_.garbage_grace.count() / 2;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    KeyedUse q(reader->has, user, ids[i]);
    const int rc = q.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      reader.failed("cannot look up shares");
      return held;
    }
    held[i] = rc == SQLITE_ROW && (q.int64(0) > 0 || q.int64(1) >= fresh_since);
  }
  tx.commit();
  return held;
}

std::error_code StoreImpl::run_part(const Part& part) {
  std::error_code result;
  run_parts(std::span(&part, 1), std::span(&result, 1));
  return result;
}

void StoreImpl::run_parts(std::span<const Part> parts, std::span<std::error_code> results) {
  std::vector<Queued> mine(parts.size());
  std::unique_lock lock(group_mu_);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    mine[i].part = &parts[i];
    queued_.push_back(&mine[i]);
  }
  const auto all_done = [&] {
    return std::all_of(mine.begin(), mine.end(), [](const Queued& q) { return q.done; });
  };
  while (!all_done()) {
    if (leading_) {
      group_cv_.wait(lock);
      continue;
    }
    // No write group is being written: this caller writes the next one, its own parts included.
    leading_ = true;
    std::array<Queued*, kMaxGroupParts> taken{};
    const std::size_t n = std::min(queued_.size(), kMaxGroupParts);
    std::copy_n(queued_.begin(), n, taken.begin());
    queued_.erase(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n));
    const std::span<Queued* const> group(taken.data(), n);
    lock.unlock();
    try {
      write_group(group);
    } catch (const std::exception& e) {
      for (Queued* q : group)
        q->result = io_failure("write failed", e.what());
    } catch (...) {
      for (Queued* q : group)
        q->result = io_failure("write failed", "unknown exception");
    }
    lock.lock();
    for (Queued* q : group)
      q->done = true;
    leading_ = false;
    group_cv_.notify_all();
  }
  for (std::size_t i = 0; i < parts.size(); ++i)
    results[i] = mine[i].result;
}

void StoreImpl::write_group(std::span<Queued* const> group) {
  std::lock_guard lock(write_mu_);
  for (std::size_t next = 0; next < group.size();)
    next = write_round(group, next);
}

std::size_t StoreImpl::write_round(std::span<Queued* const> group, std::size_t next) {
  sqlite3* db = wdb_.get();
  sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
  if (tx.begin_rc() != SQLITE_DONE) {
    const std::error_code ec = sql_failure(db, "cannot begin write");
    for (std::size_t i = next; i < group.size(); ++i)
      group[i]->result = ec;
    return group.size();
  }
  group_error_.clear();
  std::vector<Queued*> held;  // the parts whose changes this transaction holds
  held.reserve(group.size() - next);
  // Set when SQLite ended the transaction itself (it does after some failures, a full disk among
  // them): the parts held so far lost their changes, and the rest go to a new transaction.
  std::error_code lost;
  for (; next < group.size() && !lost; ++next) {
    Queued& q = *group[next];
    q.result = sql::run(writer_.savepoint) == SQLITE_DONE
                   ? (*q.part)()
                   : sql_failure(db, "cannot begin a part of a write");
    if (!q.result && sql::run(writer_.release) != SQLITE_DONE)
      q.result = sql_failure(db, "cannot end a part of a write");
    if (!q.result) {
      held.push_back(&q);
      continue;
    }
    if (sqlite3_get_autocommit(db)) {
      lost = q.result;
    } else if (sql::run(writer_.rollback_to) != SQLITE_DONE ||
               sql::run(writer_.release) != SQLITE_DONE) {
      lost = sql_failure(db, "cannot take back a part of a write");
    }
  }
  std::error_code failure = lost ? lost : group_error_;
  // The appended records are durable before any index row that points at them.
  if (!failure && !held.empty() && pack_unsynced_ && pack_) {
    if (std::error_code ec = pack::sync_data(pack_.get())) {
      // After a failed sync the file's pages are in an unknown state.
      pack_.reset();
      failure = disk_failure("cannot sync pack", ec);
    }
  }
  // What a failed round appended is garbage that no committed row points at.
  pack_unsynced_ = false;
  if (!failure && !held.empty() && tx.commit() != SQLITE_DONE)
    failure = sql_failure(db, "cannot commit write");
  if (failure) {
    for (Queued* q : held)
      q->result = failure;
  }
  if (failure || held.empty())
    tx.rollback();
  return next;
}

std::error_code StoreImpl::put_new_shares(std::string_view user, std::span<const ShareInput> shares,
                                          bool& refused) {
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

  return run_part([&]() -> std::error_code {
    sqlite3* db = wdb_.get();
    const std::int64_t created = now_seconds();
    std::vector<std::size_t> fresh;
    std::vector<std::size_t> unreferenced;  // held, but garbage: its grace period starts again
    for (std::size_t i : order) {
      KeyedUse q(writer_.share_size, user, shares[i].id);
      const int rc = q.step();
      if (rc == SQLITE_DONE)
        fresh.push_back(i);
      else if (rc == SQLITE_ROW && q.int64(1) == 0)
        unreferenced.push_back(i);
      else if (rc != SQLITE_ROW)
        return sql_failure(db, "cannot look up shares");
    }
    for (std::size_t i : unreferenced) {
      KeyedUse q(writer_.touch, user, shares[i].id);
      q.bind(3, created);
      if (q.step() != SQLITE_DONE)
        return sql_failure(db, "cannot refresh shares");
    }
    if (fresh.empty())
      return {};

    std::uint64_t incoming = pack::kFileHeaderSize;
    for (std::size_t i : fresh)
      incoming += pack::kRecordHeaderSize + shares[i].data.size();
    if (auto ec = admit_data(incoming)) {
      refused = true;
      return ec;
    }
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
    const std::uint64_t start = pack_size_;
    // Until the index commits, nothing points at the appended bytes: on a failure before that
    // they are cut off again, so a full disk gets its space back and the pack's tail stays known.
    auto take_back = [&] {
      if (::ftruncate(pack_.get(), static_cast<off_t>(start)) == 0)
        pack_size_ = start;
      else
        retire_pack();  // the tail is unknown: later records go to a fresh pack
    };
    pack_unsynced_ = true;
    const bool bulk = end - start >= fresh.size() * kBulkShareBytes;
    if (std::error_code ec = pack::write_all(
            pack_.get(), iov, start, bulk ? pack::Caching::drop_behind : pack::Caching::keep)) {
      take_back();
      return disk_failure("cannot write pack", ec);
    }
    pack_size_ = end;

    std::error_code index_error;
    {
      sql::Use q(writer_.insert_pack);
      q.bind(1, std::int64_t{pack_number_});
      q.bind(2, created);
      if (q.step() != SQLITE_DONE)
        index_error = sql_failure(db, "cannot index pack");
    }
    for (std::size_t k = 0; !index_error && k < fresh.size(); ++k) {
      const ShareInput& share = shares[fresh[k]];
      KeyedUse q(writer_.insert_share, user, share.id);
      q.bind(3, std::int64_t{pack_number_});
      q.bind(4, static_cast<std::int64_t>(positions[k]));
      q.bind(5, static_cast<std::int64_t>(share.data.size()));
      q.bind(6, created);
      if (q.step() != SQLITE_DONE)
        index_error = sql_failure(db, "cannot index shares");
    }
    if (index_error) {
      take_back();
      return index_error;
    }
    // A failed COMMIT may still have reached the log, so the records stay (as garbage at worst).
    pack_bytes_ += end - start;
    return {};
  });
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
  std::error_code ec;
  std::shared_ptr<const pack::Fd> fd;
  for (int attempt = 0; !fd; ++attempt) {
    const std::int64_t previous = number;
    if ((ec = read_row(&Reader::locate, user, id, "cannot look up share", locate)))
      return ec;
    if (number < 1 || number > pack::kMaxNumber ||
        pos < static_cast<std::int64_t>(pack::kFileHeaderSize) || size < 0 ||
        size > static_cast<std::int64_t>(pack::kMaxBlobBytes)) {
      return corrupt("index entry out of range");
    }
    fd = pack_for_reading(static_cast<std::uint32_t>(number), ec);
    if (ec == std::errc::no_such_file_or_directory) {
      // Compaction may have moved the record and unlinked its pack since the lookup.
      if (number == previous || attempt + 1 == kMovedShareAttempts)
        return corrupt("pack file missing");
      continue;
    }
    if (ec)
      return io_failure("cannot open pack", ec.message());
  }

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

StoreImpl::PreparedCommit StoreImpl::prepare_commit(std::span<const ShareRef> refs) {
  PreparedCommit out;
  out.new_ids.resize(refs.size());
  for (std::size_t i = 0; i < refs.size(); ++i) {
    out.new_ids[i] = refs[i].id;
    out.chunks += refs[i].chunks;
  }
  std::sort(out.new_ids.begin(), out.new_ids.end());
  out.refs_blob = encode_refs(refs);
  return out;
}

std::error_code StoreImpl::commit_version(std::string_view user, const Id& file,
                                          std::uint64_t version, std::span<const ShareRef> refs,
                                          ByteView entry, ByteView manifest,
                                          std::vector<Id>& missing) {
  const PreparedCommit prepared = prepare_commit(refs);
  return run_part(commit_part({file, version, refs, entry, manifest}, user, prepared, missing));
}

void StoreImpl::commit_batch(std::string_view user, std::span<const CommitInput> commits,
                             std::uint64_t quota, std::span<std::error_code> results) {
  static_cast<void>(quota);  // counted by the caller (keeps_quotas() is false)
  std::vector<PreparedCommit> prepared;
  prepared.reserve(commits.size());
  for (const CommitInput& c : commits)
    prepared.push_back(prepare_commit(c.refs));
  std::vector<std::vector<Id>> missing(commits.size());
  std::vector<Part> parts;
  parts.reserve(commits.size());
  for (std::size_t i = 0; i < commits.size(); ++i)
    parts.push_back(commit_part(commits[i], user, prepared[i], missing[i]));
  run_parts(parts, results);
  if (std::find(results.begin(), results.end(), Errc::no_space) != results.end())
    out_of_space();
}

StoreImpl::Part StoreImpl::commit_part(const CommitInput& commit, std::string_view user,
                                       const PreparedCommit& prepared, std::vector<Id>& missing) {
  missing.clear();
  return [this, commit, user, &prepared, &missing]() -> std::error_code {
    const auto& [file, version, refs, entry, manifest] = commit;
    const auto& [new_ids, chunks, refs_blob] = prepared;
    sqlite3* db = wdb_.get();
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

    if (auto ec = update_refcounts(user, old_ids, new_ids, refs))
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
    return {};
  };
}

std::error_code StoreImpl::get_file(std::string_view user, const Id& file, FileRecord& out) {
  return read_row(&Reader::file, user, file, "cannot read file", [&](const sql::Use& q) {
    out.version = static_cast<std::uint64_t>(q.int64(0));
    out.entry = copy_blob(q, 1);
    out.manifest = copy_blob(q, 2);
  });
}

std::error_code StoreImpl::list_files(std::string_view user, std::vector<FileSummary>& files) {
  files.clear();
  Lease reader = borrow_reader();
  if (!reader)
    return Errc::io;
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
  if (rc != SQLITE_DONE) {
    files.clear();
    return reader.failed("cannot list files");
  }
  return {};
}

std::error_code StoreImpl::remove_one(std::string_view user, const Id& file) {
  return run_part([&]() -> std::error_code {
    sqlite3* db = wdb_.get();
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
    if (auto ec = update_refcounts(user, old_ids, {}, {}))
      return ec;
    {
      KeyedUse q(writer_.delete_file, user, file);
      if (q.step() != SQLITE_DONE)
        return sql_failure(db, "cannot delete file");
    }
    return {};
  });
}

std::error_code StoreImpl::file_info(std::string_view user, const Id& file, FileInfo& out) {
  return read_row(&Reader::info, user, file, "cannot read file", [&](const sql::Use& q) {
    out.version = static_cast<std::uint64_t>(q.int64(0));
    out.shares = static_cast<std::uint64_t>(q.int64(1));
    out.chunks = static_cast<std::uint64_t>(q.int64(2));
    out.stored_bytes = static_cast<std::uint64_t>(q.int64(3));
  });
}

std::error_code StoreImpl::usage(std::string_view user, Usage& out) {
  Lease reader = borrow_reader();
  if (!reader)
    return Errc::io;
  return detail::usage_of(reader->db.get(), user, out);
}

std::error_code StoreImpl::stats(StoreStats& out) {
  Lease reader = borrow_reader();
  if (!reader)
    return Errc::io;
  return detail::collect_stats(reader->db.get(), dir_, out);
}

std::error_code StoreImpl::check(CheckReport& out) {
  out = {};
  std::lock_guard checking(compact_mu_);
  Lease reader = borrow_reader();
  if (!reader)
    return Errc::io;
  return detail::run_check(reader->db.get(), dir_, out);
}

std::error_code StoreImpl::migrate_from_1() {
  sqlite3* db = wdb_.get();
  if (sql::exec(db, "BEGIN IMMEDIATE") != SQLITE_OK)
    return sql_failure(db, "cannot begin the upgrade");
  auto rollback = [&](std::string_view what) {
    const std::error_code ec = sql_failure(db, what);
    sql::exec(db, "ROLLBACK");
    return ec;
  };
  if (sql::exec(db, kMigrateFrom1) != SQLITE_OK || sql::exec(db, kCompactionsTable) != SQLITE_OK)
    return rollback("cannot upgrade the schema");
  sql::Stmt files;
  sql::Stmt set_chunks;
  if (sql::prepare(db, "SELECT user, refs FROM files", files) != SQLITE_OK ||
      sql::prepare(db, "UPDATE shares SET chunks = ?3 WHERE user = ?1 AND id = ?2", set_chunks) !=
          SQLITE_OK) {
    return rollback("cannot prepare the upgrade");
  }
  {
    sql::Use q(files);
    std::vector<ShareRef> refs;
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
      const std::string user = q.text(0);
      if (!decode_refs(q.blob(1), refs))
        continue;  // check() reports it
      for (const ShareRef& ref : refs) {
        KeyedUse set(set_chunks, user, ref.id);
        set.bind(3, std::int64_t{ref.chunks});
        if (set.step() != SQLITE_DONE)
          return rollback("cannot fill in chunk counts");
      }
    }
    if (rc != SQLITE_DONE)
      return rollback("cannot read files");
  }
  if (sql::exec(db, "COMMIT") != SQLITE_OK)
    return rollback("cannot commit the upgrade");
  return {};
}

void StoreImpl::forget_pack(std::uint32_t number) {
  std::lock_guard lock(packs_mu_);
  open_packs_.erase(number);
}

std::uint64_t StoreImpl::disk_bytes() {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> packs;
  detail::list_packs(dir_, packs);
  std::uint64_t total = detail::index_bytes(dir_);
  for (const auto& [number, size] : packs)
    total += size;
  return total;
}

std::error_code StoreImpl::drop_garbage(std::int64_t cutoff, CompactionReport& out) {
  for (;;) {
    std::lock_guard lock(write_mu_);
    sqlite3* db = wdb_.get();
    sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
    if (tx.begin_rc() != SQLITE_DONE)
      return sql_failure(db, "cannot begin compaction");
    int dropped = 0;
    {
      sql::Use q(writer_.drop_garbage);
      q.bind(1, cutoff);
      q.bind(2, std::int64_t{kGarbageBatch});
      int rc;
      while ((rc = q.step()) == SQLITE_ROW) {
        ++dropped;
        out.garbage_bytes += static_cast<std::uint64_t>(q.int64(0));
      }
      if (rc != SQLITE_DONE)
        return sql_failure(db, "cannot drop unreferenced shares");
    }
    if (tx.commit() != SQLITE_DONE)
      return sql_failure(db, "cannot commit compaction");
    out.garbage_shares += static_cast<std::uint64_t>(dropped);
    if (dropped < kGarbageBatch)
      return {};
  }
}

std::error_code StoreImpl::delete_pack(std::uint32_t number) {
  {
    std::lock_guard lock(write_mu_);
    sql::Use q(writer_.pack_usage);
    q.bind(1, std::int64_t{number});
    if (q.step() != SQLITE_ROW)
      return sql_failure(wdb_.get(), "cannot count a pack's records");
    if (q.int64(0) != 0)
      return {};  // still holds records (one failed its check while being copied)
  }
  if (::unlink(pack_path(number).c_str()) != 0 && errno != ENOENT)
    return io_failure("cannot delete pack", std::generic_category().message(errno));
  forget_pack(number);
  if (auto ec = pack::sync_dir(packs_dir_))
    return io_failure("cannot sync packs", ec.message());
  return {};
}

std::error_code StoreImpl::rewrite_packs(const std::vector<std::uint32_t>& victims,
                                         const std::function<bool()>& stopping,
                                         CompactionReport& out) {
  struct Row {
    std::string user;
    Id id{};
    std::int64_t pos = 0;
    std::int64_t size = 0;
    std::int64_t new_pos = -1;  // -1: not copied
  };
  pack::Fd output;
  std::uint32_t output_number = 0;
  std::uint64_t output_size = 0;
  Bytes buffer;
  std::uint64_t buffered_at = 0;  // output offset of buffer[0]
  // Bytes of the output that rows may point at; what lies past them is cut off when the rewrite
  // fails, so a compaction stopped by a full disk does not hold on to its partial copy.
  std::uint64_t output_indexed = 0;
  struct CutBack {
    StoreImpl& store;
    pack::Fd& output;
    std::uint32_t& number;
    std::uint64_t& size;
    std::uint64_t& indexed;
    ~CutBack() {
      if (!output || size <= indexed)
        return;
      if (indexed == 0)
        ::unlink(store.pack_path(number).c_str());
      else if (::ftruncate(output.get(), static_cast<off_t>(indexed)) != 0)
        log_failure("compaction", "cannot cut back a partial copy; compaction removes it later");
    }
  } cut_back{*this, output, output_number, output_size, output_indexed};
  auto flush = [&]() -> std::error_code {
    if (buffer.empty())
      return {};
    iovec iov{buffer.data(), buffer.size()};
    // Old records moved as a block: a compaction of many GiB would otherwise push out of the page
    // cache what reads are using.
    if (auto ec = pack::write_all(output.get(), std::span<iovec>(&iov, 1), buffered_at,
                                  pack::Caching::drop_behind)) {
      return disk_failure("cannot write pack", ec);
    }
    buffered_at += buffer.size();
    buffer.clear();
    return {};
  };

  for (const std::uint32_t victim : victims) {
    if (stopping())
      return {};
    std::vector<Row> rows;
    {
      Lease reader = borrow_reader();
      if (!reader)
        return Errc::io;
      sql::Stmt stmt;
      if (sql::prepare(reader->db.get(),
                       "SELECT user, id, pos, size FROM shares WHERE pack = ?1 ORDER BY pos",
                       stmt) != SQLITE_OK) {
        return reader.failed("cannot prepare compaction");
      }
      sql::Use q(stmt);
      q.bind(1, std::int64_t{victim});
      int rc;
      while ((rc = q.step()) == SQLITE_ROW) {
        Row& row = rows.emplace_back();
        row.user = q.text(0);
        const ByteView id = q.blob(1);
        if (id.size() != sizeof(Id)) {
          rows.pop_back();
          continue;
        }
        std::copy(id.begin(), id.end(), row.id.begin());
        row.pos = q.int64(2);
        row.size = q.int64(3);
      }
      if (rc != SQLITE_DONE)
        return reader.failed("cannot list a pack's records");
    }

    if (!output || output_size >= options_.pack_target_bytes) {
      output.reset();
      std::lock_guard lock(write_mu_);
      // cut_back reads both if create_pack fails.
      output_indexed = 0;  // NOLINT(clang-analyzer-deadcode.DeadStores)
      output_size = 0;     // NOLINT(clang-analyzer-deadcode.DeadStores)
      if (auto ec = create_pack(output_number, output))
        return ec;
      buffer.assign(pack::kFileMagic.begin(), pack::kFileMagic.end());
      buffered_at = 0;
      output_size = pack::kFileHeaderSize;
    }
    pack::Fd input;
    if (auto ec = pack::open_file(pack_path(victim), O_RDONLY, 0, input))
      return io_failure("cannot open pack", ec.message());
    std::uint64_t moved = 0;
    for (Row& row : rows) {
      if (row.size < 0 || row.size > static_cast<std::int64_t>(pack::kMaxBlobBytes))
        continue;
      pack::RecordHeader header{};
      Bytes blob(static_cast<std::size_t>(row.size));
      iovec iov[2] = {{header.data(), header.size()}, {blob.data(), blob.size()}};
      bool short_read = false;
      const std::error_code ec =
          pack::read_all(input.get(), iov, static_cast<std::uint64_t>(row.pos), short_read);
      if (ec || short_read || !pack::check_record(header, row.id, blob)) {
        // Left where it is, for check() to report; the pack then stays too.
        log_failure("compaction",
                    "a record failed its check and stays in " + pack::file_name(victim));
        continue;
      }
      row.new_pos = static_cast<std::int64_t>(output_size);
      buffer.insert(buffer.end(), header.begin(), header.end());
      buffer.insert(buffer.end(), blob.begin(), blob.end());
      output_size += header.size() + blob.size();
      moved += blob.size();
      if (buffer.size() >= kCopyBytes) {
        if (auto write_error = flush())
          return write_error;
      }
    }
    if (auto ec = flush())
      return ec;
    // The copies are durable before any row points at them.
    if (auto ec = pack::sync_data(output.get()))
      return disk_failure("cannot sync pack", ec);
    {
      std::lock_guard lock(write_mu_);
      sqlite3* db = wdb_.get();
      sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
      if (tx.begin_rc() != SQLITE_DONE)
        return sql_failure(db, "cannot begin compaction");
      {
        sql::Use q(writer_.insert_pack);
        q.bind(1, std::int64_t{output_number});
        q.bind(2, now_seconds());
        if (q.step() != SQLITE_DONE)
          return sql_failure(db, "cannot index pack");
      }
      for (const Row& row : rows) {
        if (row.new_pos < 0)
          continue;
        KeyedUse q(writer_.move_share, row.user, row.id);
        q.bind(3, std::int64_t{output_number});
        q.bind(4, row.new_pos);
        q.bind(5, std::int64_t{victim});
        q.bind(6, row.pos);
        if (q.step() != SQLITE_DONE)
          return sql_failure(db, "cannot move shares");
        ++out.records_moved;
      }
      // A failed COMMIT may still have reached the log: from here on rows may point at the copy
      // (cut_back reads it).
      output_indexed = output_size;  // NOLINT(clang-analyzer-deadcode.DeadStores)
      if (tx.commit() != SQLITE_DONE)
        return sql_failure(db, "cannot commit compaction");
    }
    out.bytes_moved += moved;
    ++out.packs_rewritten;
    input.reset();
    if (auto ec = delete_pack(victim))
      return ec;
    ++out.packs_deleted;
  }
  return {};
}

std::error_code StoreImpl::record_compaction(const CompactionReport& r) {
  std::lock_guard lock(write_mu_);
  sqlite3* db = wdb_.get();
  sql::Stmt insert;
  sql::Stmt trim;
  if (sql::prepare(db,
                   "INSERT INTO compactions (started, finished, grace, garbage_shares, "
                   "garbage_bytes, packs_rewritten, packs_deleted, records_moved, bytes_moved, "
                   "disk_before, disk_after, trigger) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                   insert) != SQLITE_OK ||
      sql::prepare(db, "DELETE FROM compactions WHERE id <= (SELECT max(id) FROM compactions) - ?1",
                   trim) != SQLITE_OK) {
    return sql_failure(db, "cannot prepare the compaction record");
  }
  sql::Transaction tx(writer_.begin, writer_.commit, writer_.rollback);
  if (tx.begin_rc() != SQLITE_DONE)
    return sql_failure(db, "cannot begin the compaction record");
  {
    sql::Use q(insert);
    const std::int64_t values[] = {r.started,
                                   r.finished,
                                   r.grace_seconds,
                                   static_cast<std::int64_t>(r.garbage_shares),
                                   static_cast<std::int64_t>(r.garbage_bytes),
                                   static_cast<std::int64_t>(r.packs_rewritten),
                                   static_cast<std::int64_t>(r.packs_deleted),
                                   static_cast<std::int64_t>(r.records_moved),
                                   static_cast<std::int64_t>(r.bytes_moved),
                                   static_cast<std::int64_t>(r.disk_bytes_before),
                                   static_cast<std::int64_t>(r.disk_bytes_after)};
    for (std::size_t i = 0; i < std::size(values); ++i)
      q.bind(static_cast<int>(i + 1), values[i]);
    q.bind(static_cast<int>(std::size(values) + 1), std::string_view(r.trigger));
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot record the compaction");
  }
  {
    sql::Use q(trim);
    q.bind(1, std::int64_t{detail::kCompactionHistory});
    if (q.step() != SQLITE_DONE)
      return sql_failure(db, "cannot trim the compaction history");
  }
  if (tx.commit() != SQLITE_DONE)
    return sql_failure(db, "cannot commit the compaction record");
  return {};
}

std::error_code StoreImpl::compact_once(const CompactOptions& options, CompactionReport& out) {
  out = {};
  std::lock_guard compacting(compact_mu_);
  // A check running from another process (the operator's, beside this server) goes first.
  const auto lock = detail::MaintenanceLock::acquire(dir_, true, kMaintenanceWait);
  if (!lock) {
    log_failure("compaction skipped", "the store is being checked");
    return Errc::busy;
  }
  const std::chrono::seconds grace = options.grace.value_or(options_.garbage_grace);
  const auto stopping = [&] { return options.stop && options.stop->load(); };
  out.trigger = options.trigger;
  out.started = now_seconds();
  out.grace_seconds = grace.count();
  out.disk_bytes_before = disk_bytes();
  if (auto ec = drop_garbage(out.started - grace.count(), out))
    return ec;

  // Packs below `limit` other than the current one take no new records, so only compaction
  // (this one) changes what they hold, and measuring them needs no lock. A current pack that is
  // mostly dead is retired first, so that it can be compacted too.
  std::uint32_t current = 0;
  std::uint32_t limit = 0;
  {
    std::lock_guard lock_writer(write_mu_);
    if (pack_ && pack_size_ > 0) {
      sql::Use q(writer_.pack_usage);
      q.bind(1, std::int64_t{pack_number_});
      if (q.step() != SQLITE_ROW)
        return sql_failure(wdb_.get(), "cannot measure the current pack");
      const std::uint64_t used = pack::kFileHeaderSize + static_cast<std::uint64_t>(q.int64(1)) +
                                 static_cast<std::uint64_t>(q.int64(0)) * pack::kRecordHeaderSize;
      if (static_cast<double>(used) <=
          (1.0 - options_.rewrite_dead_fraction) * static_cast<double>(pack_size_)) {
        pack_.reset();
      }
    }
    current = pack_ ? pack_number_ : 0;
    limit = next_pack_;
  }
  std::map<std::uint32_t, std::pair<std::uint64_t, std::uint64_t>> live;  // records, bytes
  {
    Lease reader = borrow_reader();
    if (!reader)
      return Errc::io;
    sql::Stmt stmt;
    if (sql::prepare(reader->db.get(),
                     "SELECT pack, count(*), coalesce(sum(size), 0) FROM shares GROUP BY pack",
                     stmt) != SQLITE_OK) {
      return reader.failed("cannot prepare compaction");
    }
    sql::Use q(stmt);
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) {
      if (q.int64(0) >= 1 && q.int64(0) <= pack::kMaxNumber) {
        const std::uint64_t records = static_cast<std::uint64_t>(q.int64(1));
        live[static_cast<std::uint32_t>(q.int64(0))] = {
            records, static_cast<std::uint64_t>(q.int64(2)) + records * pack::kRecordHeaderSize};
      }
    }
    if (rc != SQLITE_DONE)
      return reader.failed("cannot measure packs");
  }

  std::vector<std::pair<std::uint32_t, std::uint64_t>> packs;
  if (auto ec = detail::list_packs(dir_, packs))
    return io_failure("cannot list packs", ec.message());
  std::vector<std::uint32_t> victims;
  for (const auto& [number, size] : packs) {
    if (number >= limit || number == current)
      continue;
    const auto it = live.find(number);
    if (it == live.end() || it->second.first == 0) {
      if (auto ec = delete_pack(number))
        return ec;
      ++out.packs_deleted;
      continue;
    }
    const std::uint64_t used = pack::kFileHeaderSize + it->second.second;
    if (static_cast<double>(used) <=
        (1.0 - options_.rewrite_dead_fraction) * static_cast<double>(size)) {
      victims.push_back(number);
    }
  }
  if (auto ec = rewrite_packs(victims, stopping, out))
    return ec;

  {
    // Freed index pages go back to the disk and the log shrinks; a busy log is left for later.
    std::lock_guard lock_writer(write_mu_);
    sql::exec(wdb_.get(), "PRAGMA incremental_vacuum");
    sql::exec(wdb_.get(), "PRAGMA wal_checkpoint(TRUNCATE)");
  }
  out.finished = now_seconds();
  out.disk_bytes_after = disk_bytes();
  return record_compaction(out);
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
