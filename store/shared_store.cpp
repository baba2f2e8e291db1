// The shared store (shared_store.hpp): pack objects through objectstore::Client, the index through
// a pool of libpq connections. Each call borrows one connection; a connection that failed is
// closed rather than returned.
#include "store/shared_store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "store/inspect.hpp"
#include "store/pack.hpp"
#include "store/pg.hpp"
#include "store/refs.hpp"

namespace splitfs::store {

namespace {

using detail::decode_refs;
using detail::encode_refs;
using detail::kChunkBytes;

// Connections kept open between requests.
constexpr std::size_t kMaxIdleConnections = 16;
// Transactions that lost a deadlock or a serialisation race are run again this many times.
constexpr int kTransactionAttempts = 8;
// Lookups of a share that compaction moved meanwhile, before giving up.
constexpr int kMovedShareAttempts = 3;
constexpr int kGarbageBatch = 2048;
// An unsealed pack row older than this belongs to a put that died: its object is garbage.
constexpr std::int64_t kStaleUnsealedSeconds = 3600;
// Reads: a read at the start of a pack, or right after the previous read of that pack, fetches
// the rest of the pack (up to kReadAheadBytes, more than a whole put batch) in one ranged GET and
// keeps it, since a fetch reads a put's records in order; other reads fetch just their record.
// One GET per pack measured best on single-node Swift: the same bytes in 4 MiB windows, or in
// 2 MiB ranges four at a time, came back 20-40% slower. Pack objects never change, so a kept
// window can only serve rows that still point into it.
constexpr std::uint64_t kReadAheadBytes = 20u << 20;
constexpr std::uint64_t kMaxWindowBytes = 96u << 20;
constexpr std::size_t kMaxStreams = 64;
// A share's lookup also brings the locations of the records after it in its pack (up to
// kLocationsPerLookup), which the next reads of a fetch use instead of asking the index each. A
// location is used for kLocationLifetime at most: a record compaction moved is still read right
// from its old object until that is deleted (then the share is looked up again), and a dropped
// share can at worst be served from a location this young.
constexpr int kLocationsPerLookup = 512;
constexpr auto kLocationLifetime = std::chrono::seconds(5);
constexpr std::size_t kMaxLocations = 1u << 16;
// How long check() waits for a running compaction.
constexpr auto kCheckWait = std::chrono::seconds(600);
// Session settings that bound every wait on the index.
constexpr const char* kSessionSettings =
    "SET statement_timeout = '300s'; SET lock_timeout = '60s'; "
    "SET idle_in_transaction_session_timeout = '300s'; SET client_min_messages = warning";

std::int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void log_failure(std::string_view what, std::string_view detail) {
  std::fprintf(stderr, "splitfs store: %.*s: %.*s\n", static_cast<int>(what.size()), what.data(),
               static_cast<int>(detail.size()), detail.data());
}

std::error_code io_failure(std::string_view what, std::string_view detail) {
  log_failure(what, detail);
  return Errc::io;
}

std::error_code corrupt(std::string_view what) {
  log_failure("corrupt data", what);
  return Errc::corrupt;
}

bool retryable(const pg::Result& result) {
  const std::string state = pg::sqlstate(result);
  return state == "40001" || state == "40P01";
}

std::optional<Id> id_of(ByteView raw) {
  if (raw.size() != sizeof(Id))
    return std::nullopt;
  Id id{};
  std::copy(raw.begin(), raw.end(), id.begin());
  return id;
}

std::string hex_prefix(const Id& id) {
  return to_hex(ByteView(id.data(), 8)) + "...";
}

bool valid_schema(std::string_view name) {
  if (name.empty() || name.size() > 48 || (name[0] >= '0' && name[0] <= '9'))
    return false;
  return name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string_view::npos;
}

class SharedStore;

// A connection borrowed from the pool for one call.
class Lease {
 public:
  Lease(SharedStore& store, pg::Conn conn) : store_(store), conn_(std::move(conn)) {}
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  explicit operator bool() const { return conn_ != nullptr; }
  PGconn* get() const { return conn_.get(); }
  pg::Result exec(std::string_view sql, const pg::Params& params = {}) {
    return pg::exec(conn_.get(), sql, params);
  }
  // Logs the failure; a broken connection is closed instead of returned.
  std::error_code failed(std::string_view what, const pg::Result& result);

 private:
  SharedStore& store_;
  pg::Conn conn_;
  bool broken_ = false;
};

// BEGIN ... COMMIT on a lease: rolls back unless committed.
class Transaction {
 public:
  // A snapshot for reads that must agree with each other (check, stats).
  enum class Kind { write, snapshot };
  explicit Transaction(Lease& lease, Kind kind = Kind::write) : lease_(lease) {
    began_ = pg::ok(lease_.exec(
        kind == Kind::write ? "BEGIN" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
  }
  ~Transaction() {
    if (began_ && !done_)
      lease_.exec("ROLLBACK");
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  bool began() const { return began_; }
  pg::Result commit() {
    done_ = true;
    return lease_.exec("COMMIT");
  }
  void rollback() {
    if (began_ && !done_)
      lease_.exec("ROLLBACK");
    done_ = true;
  }

 private:
  Lease& lease_;
  bool began_ = false;
  bool done_ = false;
};

class SharedStore final : public Store {
 public:
  SharedStore(const SharedLocation& location, const Options& options);

  std::vector<bool> has_shares(std::string_view user, std::span<const Id> ids) override;
  std::error_code put_shares(std::string_view user, std::span<const ShareInput> shares) override {
    return put_shares_within(user, shares, 0);
  }
  std::error_code get_share(std::string_view user, const Id& id, Bytes& out) override;
  std::error_code commit(std::string_view user, const Id& file, std::uint64_t version,
                         std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                         std::vector<Id>& missing) override {
    return change_file(user, file, version, refs, entry, manifest, false, 0, missing);
  }
  bool keeps_quotas() const override { return true; }
  std::error_code put_shares_within(std::string_view user, std::span<const ShareInput> shares,
                                    std::uint64_t quota) override;
  std::error_code commit_within(std::string_view user, const Id& file, std::uint64_t version,
                                std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                                std::uint64_t quota, std::vector<Id>& missing) override {
    return change_file(user, file, version, refs, entry, manifest, false, quota, missing);
  }
  std::error_code get_file(std::string_view user, const Id& file, FileRecord& out) override;
  std::vector<FileSummary> list_files(std::string_view user) override {
    std::vector<FileSummary> files;
    list_files(user, files);
    return files;
  }
  std::error_code list_files(std::string_view user, std::vector<FileSummary>& out) override;
  std::error_code remove_file(std::string_view user, const Id& file) override;
  std::error_code file_info(std::string_view user, const Id& file, FileInfo& out) override;
  std::error_code usage(std::string_view user, Usage& out) override;
  std::error_code stats(StoreStats& out) override;
  std::error_code compact(const CompactOptions& options, CompactionReport& out) override;
  std::error_code check(CheckReport& out) override;

  void drop_idle() {
    std::lock_guard lock(pool_mu_);
    idle_.clear();
  }
  void release(pg::Conn conn) {
    std::lock_guard lock(pool_mu_);
    if (idle_.size() < kMaxIdleConnections)
      idle_.push_back(std::move(conn));
  }

 private:
  pg::Conn connect();
  Lease borrow();
  void create_schema();
  // A commit or a removal (empty `refs` and `remove`), retried when it lost a race.
  std::error_code change_file(std::string_view user, const Id& file, std::uint64_t version,
                              std::span<const ShareRef> refs, ByteView entry, ByteView manifest,
                              bool remove, std::uint64_t quota, std::vector<Id>& missing);
  std::error_code change_file_once(Lease& lease, std::string_view user, const Id& file,
                                   std::uint64_t version, std::span<const ShareRef> refs,
                                   ByteView entry, ByteView manifest, bool remove,
                                   std::uint64_t quota, std::vector<Id>& missing, bool& retry);
  std::error_code usage_of(Lease& lease, std::optional<std::string_view> user, Usage& out);
  std::uint64_t index_bytes(Lease& lease);
  std::uint64_t object_bytes(Lease& lease);
  std::error_code delete_pack(Lease& lease, std::int64_t number, CompactionReport& out);
  std::error_code rewrite_pack(Lease& lease, std::int64_t victim, CompactionReport& out);
  std::error_code new_pack(Lease& lease, std::int64_t size, std::int64_t& number);
  std::error_code check_user(Lease& lease, const std::string& user, CheckReport& out);
  std::error_code check_records(Lease& lease, CheckReport& out);
  std::int64_t lock_key(std::string_view what) const;

  // Reads `length` bytes of pack `number` (`pack_size` bytes long) at `pos`, through the windows.
  std::error_code read_record(std::int64_t number, std::uint64_t pack_size, std::uint64_t pos,
                              std::size_t length, Bytes& out);

  struct Location {
    std::int64_t pack = 0;
    std::int64_t pos = 0;
    std::int64_t size = 0;
    std::int64_t pack_size = 0;
    std::chrono::steady_clock::time_point found;
  };
  // Where `id` of `user` is: from a recent lookup, or from the index (with the records after it).
  std::error_code locate(const std::string& user, const Id& id, bool fresh, Location& out);

  const SharedLocation location_;
  const Options options_;
  objectstore::Client objects_;
  std::mutex pool_mu_;
  std::vector<pg::Conn> idle_;

  struct Window {
    std::int64_t pack = 0;
    std::uint64_t start = 0;
    std::shared_ptr<const Bytes> data;
  };
  std::mutex windows_mu_;
  std::deque<Window> windows_;  // newest last
  std::uint64_t window_bytes_ = 0;
  std::map<std::int64_t, std::uint64_t> next_read_;  // pack -> where its last read ended

  std::mutex locations_mu_;
  std::map<std::pair<std::string, Id>, Location> locations_;
};

std::error_code Lease::failed(std::string_view what, const pg::Result& result) {
  log_failure(what, pg::error_text(conn_.get(), result));
  if (PQstatus(conn_.get()) != CONNECTION_OK) {
    // The index went away: the idle connections are as dead as this one.
    broken_ = true;
    store_.drop_idle();
  }
  return Errc::io;
}

// Adds `delta` bytes to what the user holds (user_usage, kept equal to Usage::disk_bytes) in the
// transaction under way; the result holds the new count. The row lock taken here serialises the
// user's quota checks across processes until the transaction ends.
pg::Result add_usage(Lease& lease, const std::string& user, std::int64_t delta) {
  pg::Params params;
  params.text(user).int64(delta);
  return lease.exec(
      "INSERT INTO user_usage (usr, disk_bytes) VALUES ($1, $2) ON CONFLICT (usr) DO UPDATE "
      "SET disk_bytes = user_usage.disk_bytes + excluded.disk_bytes RETURNING disk_bytes",
      params);
}

// Whether growing by `delta` to `count` bytes passes `quota` (0: none). Shrinking never does.
bool over_quota(std::int64_t delta, std::int64_t count, std::uint64_t quota) {
  return quota != 0 && delta > 0 && count > 0 && static_cast<std::uint64_t>(count) > quota;
}

Lease::~Lease() {
  if (conn_ && !broken_ && PQtransactionStatus(conn_.get()) == PQTRANS_IDLE)
    store_.release(std::move(conn_));
}

[[noreturn]] void fail_open(const SharedLocation& location, std::string_view what,
                            std::string_view detail) {
  // libpq's messages span lines; a start-up failure is one.
  std::string flat;
  for (const char c : detail) {
    if (c != '\n' || (!flat.empty() && flat.back() != ' '))
      flat.push_back(c == '\n' || c == '\t' ? ' ' : c);
  }
  while (!flat.empty() && flat.back() == ' ')
    flat.pop_back();
  throw StoreError("cannot open the shared store (bucket " + location.objects.bucket +
                   ", index schema " + location.index.schema + "): " + std::string(what) + " (" +
                   flat + ")");
}

SharedStore::SharedStore(const SharedLocation& location, const Options& options)
    : location_(location),
      options_(options),
      objects_(location.objects, location.credentials, location.object_options) {
  if (auto ec = objects_.create_bucket())
    fail_open(location_, "cannot reach or create the bucket", ec.message());
  create_schema();
}

pg::Conn SharedStore::connect() {
  pg::Conn conn(PQconnectdb(location_.index.conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) {
    log_failure("cannot connect to the index", conn ? PQerrorMessage(conn.get()) : "no memory");
    return nullptr;
  }
  const std::string settings =
      std::string(kSessionSettings) + "; SET search_path TO " + location_.index.schema;
  pg::Result result(PQexec(conn.get(), settings.c_str()));
  if (!pg::ok(result)) {
    log_failure("cannot configure the index connection", pg::error_text(conn.get(), result));
    return nullptr;
  }
  return conn;
}

Lease SharedStore::borrow() {
  {
    std::lock_guard lock(pool_mu_);
    if (!idle_.empty()) {
      pg::Conn conn = std::move(idle_.back());
      idle_.pop_back();
      if (PQstatus(conn.get()) == CONNECTION_OK)
        return Lease(*this, std::move(conn));
    }
  }
  return Lease(*this, connect());
}

std::int64_t SharedStore::lock_key(std::string_view what) const {
  // A stable 63-bit key per schema and purpose (FNV-1a).
  std::uint64_t hash = 1469598103934665603ULL;
  for (const char c : location_.index.schema + "/" + std::string(what)) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ULL;
  }
  return static_cast<std::int64_t>(hash >> 1);
}

void SharedStore::create_schema() {
  pg::Conn conn(PQconnectdb(location_.index.conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK)
    fail_open(location_, "cannot connect to the index",
              conn ? PQerrorMessage(conn.get()) : "no memory");
  const std::string& s = location_.index.schema;
  // Several processes may open a new store at once: the first creates it, under a lock.
  const std::string sql = std::string(kSessionSettings) +
                          ";\n"
                          "BEGIN;\n"
                          "SELECT pg_advisory_xact_lock(" +
                          std::to_string(lock_key("schema")) +
                          ");\n"
                          "CREATE SCHEMA IF NOT EXISTS " +
                          s + ";\nSET LOCAL search_path TO " + s + R"sql(;
CREATE SEQUENCE IF NOT EXISTS pack_numbers;
CREATE TABLE IF NOT EXISTS packs (
  number bigint PRIMARY KEY,
  created bigint NOT NULL,
  sealed boolean NOT NULL DEFAULT false,
  size bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
  usr text NOT NULL,
  id bytea NOT NULL,
  pack bigint NOT NULL,
  pos bigint NOT NULL,
  size bigint NOT NULL,
  refcount bigint NOT NULL DEFAULT 0 CHECK (refcount >= 0),
  touched bigint NOT NULL,
  chunks bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (usr, id)
);
CREATE INDEX IF NOT EXISTS shares_by_pack ON shares (pack, pos);
CREATE INDEX IF NOT EXISTS shares_unreferenced ON shares (touched) WHERE refcount = 0;
CREATE TABLE IF NOT EXISTS files (
  usr text NOT NULL,
  id bytea NOT NULL,
  version bigint NOT NULL,
  shares bigint NOT NULL,
  chunks bigint NOT NULL,
  stored_bytes bigint NOT NULL,
  entry bytea NOT NULL,
  refs bytea NOT NULL,
  manifest bytea NOT NULL,
  PRIMARY KEY (usr, id)
);
CREATE TABLE IF NOT EXISTS compactions (
  id bigserial PRIMARY KEY,
  trigger text NOT NULL,
  started bigint NOT NULL,
  finished bigint NOT NULL,
  grace bigint NOT NULL,
  garbage_shares bigint NOT NULL,
  garbage_bytes bigint NOT NULL,
  packs_rewritten bigint NOT NULL,
  packs_deleted bigint NOT NULL,
  records_moved bigint NOT NULL,
  bytes_moved bigint NOT NULL,
  disk_before bigint NOT NULL,
  disk_after bigint NOT NULL
);
-- What each user holds (Usage::disk_bytes), for quotas; a store made before this table existed
-- gets it counted from its rows once.
DO $do$ BEGIN
  IF to_regclass('user_usage') IS NULL THEN
    CREATE TABLE user_usage (usr text PRIMARY KEY, disk_bytes bigint NOT NULL);
    INSERT INTO user_usage (usr, disk_bytes)
      SELECT usr, sum(b)::bigint FROM (
        SELECT usr, size + )sql" +
                          std::to_string(pack::kRecordHeaderSize) +
                          R"sql( AS b FROM shares
        UNION ALL
        SELECT usr, length(entry) + length(refs) + length(manifest) FROM files) held
      GROUP BY usr;
  END IF;
END $do$;
COMMIT;
)sql";
  pg::Result result(PQexec(conn.get(), sql.c_str()));
  if (!pg::ok(result))
    fail_open(location_, "cannot create the index schema", pg::error_text(conn.get(), result));
  pg::Conn first = connect();
  if (!first)
    fail_open(location_, "cannot connect to the index", "see the log");
  release(std::move(first));
}

std::vector<bool> SharedStore::has_shares(std::string_view user, std::span<const Id> ids) {
  std::vector<bool> held(ids.size(), false);
  if (ids.empty())
    return held;
  Lease lease = borrow();
  if (!lease)
    return held;
  // Garbage past half its grace period counts as absent (store.hpp).
  const std::int64_t fresh_since = now_seconds() - options_.garbage_grace.count() / 2;
  pg::Params params;
  params.text(std::string(user)).id_array(ids).int64(fresh_since);
  const pg::Result r = lease.exec(
      "SELECT id FROM shares WHERE usr = $1 AND id = ANY($2::bytea[]) AND "
      "(refcount > 0 OR touched >= $3)",
      params);
  if (!pg::ok(r)) {
    lease.failed("cannot look up shares", r);
    return held;
  }
  std::set<Id> found;
  for (int row = 0; row < pg::rows(r); ++row) {
    if (auto id = id_of(pg::bytes(r, row, 0)))
      found.insert(*id);
  }
  for (std::size_t i = 0; i < ids.size(); ++i)
    held[i] = found.count(ids[i]) > 0;
  return held;
}

std::error_code SharedStore::new_pack(Lease& lease, std::int64_t size, std::int64_t& number) {
  pg::Params params;
  params.int64(now_seconds()).int64(size);
  const pg::Result r = lease.exec(
      "INSERT INTO packs (number, created, sealed, size) "
      "VALUES (nextval('pack_numbers'), $1, false, $2) RETURNING number",
      params);
  if (!pg::ok(r) || pg::rows(r) != 1)
    return lease.failed("cannot index a new pack", r);
  number = pg::int64(r, 0, 0);
  return {};
}

std::error_code SharedStore::put_shares_within(std::string_view user,
                                               std::span<const ShareInput> shares,
                                               std::uint64_t quota) {
  for (const ShareInput& share : shares) {
    if (share.data.size() > pack::kMaxBlobBytes)
      return Errc::too_large;
  }
  if (shares.empty())
    return {};
  Lease lease = borrow();
  if (!lease)
    return Errc::io;

  std::vector<Id> ids;
  ids.reserve(shares.size());
  for (const ShareInput& share : shares)
    ids.push_back(share.id);
  const std::string user_text(user);
  const std::int64_t now = now_seconds();
  // Garbage among them starts its grace period again; then whatever is held stays as it is.
  {
    pg::Params params;
    params.text(user_text).id_array(ids).int64(now);
    const pg::Result r = lease.exec(
        "UPDATE shares SET touched = $3 WHERE usr = $1 AND id = ANY($2::bytea[]) AND "
        "refcount = 0",
        params);
    if (!pg::ok(r))
      return lease.failed("cannot refresh shares", r);
  }
  std::set<Id> held;
  {
    pg::Params params;
    params.text(user_text).id_array(ids);
    const pg::Result r =
        lease.exec("SELECT id FROM shares WHERE usr = $1 AND id = ANY($2::bytea[])", params);
    if (!pg::ok(r))
      return lease.failed("cannot look up shares", r);
    for (int row = 0; row < pg::rows(r); ++row) {
      if (auto id = id_of(pg::bytes(r, row, 0)))
        held.insert(*id);
    }
  }
  // The first occurrence of each share not held, in the order given.
  std::vector<std::size_t> fresh;
  std::set<Id> taken;
  for (std::size_t i = 0; i < shares.size(); ++i) {
    if (!held.count(shares[i].id) && taken.insert(shares[i].id).second)
      fresh.push_back(i);
  }
  if (fresh.empty())
    return {};

  std::vector<ShareInput> inputs;
  std::vector<Id> fresh_ids;
  std::vector<std::int64_t> sizes;
  for (std::size_t i : fresh) {
    inputs.push_back(shares[i]);
    fresh_ids.push_back(shares[i].id);
    sizes.push_back(static_cast<std::int64_t>(shares[i].data.size()));
  }
  PackLayout layout;
  lay_out_pack(inputs, layout);
  const std::int64_t end = layout.size;
  const std::vector<std::int64_t>& positions = layout.positions;

  if (quota != 0) {
    // Refused before the upload when it would not fit; the count is checked again, under its
    // row lock, in the transaction that adds the rows.
    pg::Params params;
    params.text(user_text);
    const pg::Result r = lease.exec("SELECT disk_bytes FROM user_usage WHERE usr = $1", params);
    if (!pg::ok(r))
      return lease.failed("cannot read the user's usage", r);
    const std::int64_t held_bytes = pg::rows(r) == 1 ? pg::int64(r, 0, 0) : 0;
    const std::int64_t adding =
        end - static_cast<std::int64_t>(pack::kFileHeaderSize);  // records with their headers
    if (over_quota(adding, held_bytes + adding, quota))
      return Errc::quota_exceeded;
  }

  if (options_.capacity_bytes != 0) {
    const std::uint64_t used = object_bytes(lease) + index_bytes(lease);
    if (used + static_cast<std::uint64_t>(end) > options_.capacity_bytes) {
      log_failure("capacity reached", std::to_string(used) + " bytes in use, " +
                                          std::to_string(end) + " more refused, capacity " +
                                          std::to_string(options_.capacity_bytes));
      return Errc::no_space;
    }
  }

  std::int64_t number = 0;
  if (auto ec = new_pack(lease, end, number))
    return ec;
  const std::string key = pack_key(number);
  const auto forget_pack = [&] {
    // Nothing points at the object; compaction deletes it (or what of it arrived).
    pg::Params params;
    params.int64(number);
    lease.exec("DELETE FROM packs WHERE number = $1 AND NOT sealed", params);
  };
  if (const std::error_code ec = objects_.put_object(key, layout.parts)) {
    forget_pack();
    log_failure("cannot store pack " + key, ec.message());
    return Errc::io;
  }

  Transaction tx(lease);
  if (!tx.began())
    return lease.failed("cannot begin put", {});
  std::int64_t added = 0;
  {
    // A share another process stored meanwhile keeps its first copy; ours is dead space.
    pg::Params params;
    params.text(user_text)
        .id_array(fresh_ids)
        .int64(number)
        .int64_array(positions)
        .int64_array(sizes)
        .int64(now);
    const pg::Result r = lease.exec(
        "WITH added AS (INSERT INTO shares (usr, id, pack, pos, size, refcount, touched) "
        "SELECT $1, unnest($2::bytea[]), $3, unnest($4::bigint[]), unnest($5::bigint[]), 0, $6 "
        "ON CONFLICT (usr, id) DO NOTHING RETURNING size) "
        "SELECT coalesce(sum(size + " +
            std::to_string(pack::kRecordHeaderSize) + "), 0)::bigint FROM added",
        params);
    if (!pg::ok(r) || pg::rows(r) != 1)
      return lease.failed("cannot index shares", r);
    added = pg::int64(r, 0, 0);
  }
  if (added != 0) {
    const pg::Result r = add_usage(lease, user_text, added);
    if (!pg::ok(r) || pg::rows(r) != 1)
      return lease.failed("cannot count the user's usage", r);
    if (over_quota(added, pg::int64(r, 0, 0), quota)) {
      // Another process stored for the same user meanwhile.
      tx.rollback();
      forget_pack();
      return Errc::quota_exceeded;
    }
  }
  {
    pg::Params params;
    params.int64(number);
    const pg::Result r =
        lease.exec("UPDATE packs SET sealed = true WHERE number = $1 AND NOT sealed", params);
    if (!pg::ok(r))
      return lease.failed("cannot seal pack", r);
    if (pg::affected(r) != 1)
      return io_failure("cannot seal pack " + key, "its row was removed as stale");
  }
  const pg::Result done = tx.commit();
  if (!pg::ok(done))
    return lease.failed("cannot commit put", done);
  return {};
}

std::error_code SharedStore::read_record(std::int64_t number, std::uint64_t pack_size,
                                         std::uint64_t pos, std::size_t length, Bytes& out) {
  std::uint64_t fetch = length;
  {
    std::lock_guard lock(windows_mu_);
    for (auto it = windows_.rbegin(); it != windows_.rend(); ++it) {
      if (it->pack == number && it->start <= pos && pos + length <= it->start + it->data->size()) {
        const std::shared_ptr<const Bytes> data = it->data;
        const auto from = data->begin() + static_cast<std::ptrdiff_t>(pos - it->start);
        out.assign(from, from + static_cast<std::ptrdiff_t>(length));
        next_read_[number] = pos + length;
        return {};
      }
    }
    const auto next = next_read_.find(number);
    const bool sequential =
        pos == pack::kFileHeaderSize || (next != next_read_.end() && next->second == pos);
    if (sequential && pack_size > pos)
      fetch = std::max<std::uint64_t>(length, std::min(kReadAheadBytes, pack_size - pos));
  }
  Bytes data;
  if (auto ec = objects_.get_range(pack_key(number), pos, static_cast<std::size_t>(fetch), data))
    return ec;
  out.assign(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(length));
  std::lock_guard lock(windows_mu_);
  if (next_read_.size() >= kMaxStreams)
    next_read_.clear();
  next_read_[number] = pos + length;
  if (fetch > length) {
    window_bytes_ += data.size();
    windows_.push_back({number, pos, std::make_shared<const Bytes>(std::move(data))});
    while (window_bytes_ > kMaxWindowBytes && !windows_.empty()) {
      window_bytes_ -= windows_.front().data->size();
      windows_.pop_front();
    }
  }
  return {};
}

std::error_code SharedStore::locate(const std::string& user, const Id& id, bool fresh,
                                    Location& out) {
  const auto now = std::chrono::steady_clock::now();
  if (!fresh) {
    std::lock_guard lock(locations_mu_);
    const auto it = locations_.find({user, id});
    if (it != locations_.end() && now - it->second.found < kLocationLifetime) {
      out = it->second;
      return {};
    }
  }
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  pg::Params params;
  params.text(user).bytes(ByteView(id.data(), id.size())).int64(kLocationsPerLookup);
  const pg::Result r = lease.exec(
      "WITH hit AS (SELECT pack, pos FROM shares WHERE usr = $1 AND id = $2) "
      "SELECT s.id, s.pack, s.pos, s.size, p.size FROM hit JOIN shares s ON s.pack = hit.pack "
      "AND s.pos >= hit.pos AND s.usr = $1 LEFT JOIN packs p ON p.number = s.pack "
      "ORDER BY s.pos LIMIT $3",
      params);
  if (!pg::ok(r))
    return lease.failed("cannot look up share", r);
  const auto first = pg::rows(r) > 0 ? id_of(pg::bytes(r, 0, 0)) : std::nullopt;
  if (!first || *first != id)
    return Errc::not_found;
  std::lock_guard lock(locations_mu_);
  if (locations_.size() + static_cast<std::size_t>(pg::rows(r)) > kMaxLocations)
    locations_.clear();
  for (int row = 0; row < pg::rows(r); ++row) {
    const auto found = id_of(pg::bytes(r, row, 0));
    if (!found)
      continue;
    const Location location{pg::int64(r, row, 1), pg::int64(r, row, 2), pg::int64(r, row, 3),
                            pg::int64(r, row, 4), now};
    if (row == 0)
      out = location;
    locations_[{user, *found}] = location;
  }
  return {};
}

std::error_code SharedStore::get_share(std::string_view user, const Id& id, Bytes& out) {
  out.clear();
  const std::string user_text(user);
  std::int64_t previous = -1;
  for (int attempt = 0; attempt < kMovedShareAttempts; ++attempt) {
    Location location;
    // After a miss, the index itself: the record may have moved.
    if (auto ec = locate(user_text, id, attempt > 0, location))
      return ec;
    const std::int64_t number = location.pack;
    const std::int64_t pos = location.pos;
    const std::int64_t size = location.size;
    const std::int64_t pack_size = location.pack_size;
    if (number < 1 || pos < static_cast<std::int64_t>(pack::kFileHeaderSize) || size < 0 ||
        size > static_cast<std::int64_t>(pack::kMaxBlobBytes)) {
      return corrupt("index entry out of range");
    }
    Bytes record;
    const std::error_code ec =
        read_record(number, static_cast<std::uint64_t>(std::max<std::int64_t>(pack_size, 0)),
                    static_cast<std::uint64_t>(pos),
                    pack::kRecordHeaderSize + static_cast<std::size_t>(size), record);
    if (ec == objectstore::Errc::not_found) {
      // Compaction may have moved the record and deleted its pack since the lookup.
      if (number == previous)
        return corrupt("pack object missing");
      previous = number;
      continue;
    }
    if (ec == objectstore::Errc::failed)
      return corrupt("record beyond the end of its pack object");
    if (ec)
      return io_failure("cannot read pack " + pack_key(number), ec.message());
    pack::RecordHeader header{};
    std::copy_n(record.begin(), header.size(), header.begin());
    const ByteView blob = ByteView(record).subspan(header.size());
    if (!pack::check_record(header, id, blob))
      return corrupt("record failed its check");
    out.assign(blob.begin(), blob.end());
    return {};
  }
  return corrupt("pack object missing");
}

std::error_code SharedStore::remove_file(std::string_view user, const Id& file) {
  std::vector<Id> missing;
  return change_file(user, file, 0, {}, {}, {}, true, 0, missing);
}

std::error_code SharedStore::change_file(std::string_view user, const Id& file,
                                         std::uint64_t version, std::span<const ShareRef> refs,
                                         ByteView entry, ByteView manifest, bool remove,
                                         std::uint64_t quota, std::vector<Id>& missing) {
  for (int attempt = 1;; ++attempt) {
    Lease lease = borrow();
    if (!lease)
      return Errc::io;
    bool retry = false;
    const std::error_code ec = change_file_once(lease, user, file, version, refs, entry, manifest,
                                                remove, quota, missing, retry);
    if (!retry || attempt == kTransactionAttempts)
      return ec;
    std::this_thread::sleep_for(std::chrono::milliseconds(5 * attempt));
  }
}

std::error_code SharedStore::change_file_once(Lease& lease, std::string_view user, const Id& file,
                                              std::uint64_t version, std::span<const ShareRef> refs,
                                              ByteView entry, ByteView manifest, bool remove,
                                              std::uint64_t quota, std::vector<Id>& missing,
                                              bool& retry) {
  missing.clear();
  const std::string user_text(user);
  const ByteView file_id(file.data(), file.size());
  auto failed = [&](std::string_view what, const pg::Result& r) {
    retry = retryable(r);
    if (retry)
      return std::error_code(Errc::io);
    return lease.failed(what, r);
  };
  Transaction tx(lease);
  if (!tx.began())
    return lease.failed("cannot begin commit", {});
  {
    // Serialises changes of one file across processes.
    pg::Params params;
    params.text(user_text).bytes(file_id);
    const pg::Result r = lease.exec(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || encode($2, 'hex'), 7))",
        params);
    if (!pg::ok(r))
      return failed("cannot lock file", r);
  }
  std::vector<Id> old_ids;
  bool exists = false;
  std::int64_t old_record_bytes = 0;
  {
    pg::Params params;
    params.text(user_text).bytes(file_id);
    const pg::Result r = lease.exec(
        "SELECT version, refs, (length(entry) + length(refs) + length(manifest))::bigint "
        "FROM files WHERE usr = $1 AND id = $2",
        params);
    if (!pg::ok(r))
      return failed("cannot read file", r);
    if (pg::rows(r) == 1) {
      exists = true;
      old_record_bytes = pg::int64(r, 0, 2);
      // Versions are unsigned: the bigint column holds their bits.
      if (!remove && version <= static_cast<std::uint64_t>(pg::int64(r, 0, 0)))
        return Errc::conflict;
      std::vector<ShareRef> decoded;
      if (!decode_refs(pg::bytes(r, 0, 1), decoded))
        return corrupt("file references malformed");
      for (const ShareRef& ref : decoded)
        old_ids.push_back(ref.id);
      std::sort(old_ids.begin(), old_ids.end());
    }
  }
  if (remove && !exists)
    return Errc::not_found;

  std::vector<Id> new_ids;
  std::uint64_t chunks = 0;
  for (const ShareRef& ref : refs) {
    new_ids.push_back(ref.id);
    chunks += ref.chunks;
  }
  std::sort(new_ids.begin(), new_ids.end());
  std::vector<Id> distinct = new_ids;
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());

  std::map<Id, std::int64_t> sizes;
  if (!distinct.empty()) {
    // Locked in id order: compaction cannot drop them before the counts change, and two commits
    // that share content take their locks in the same order.
    pg::Params params;
    params.text(user_text).id_array(distinct);
    const pg::Result r = lease.exec(
        "SELECT id, size FROM shares WHERE usr = $1 AND id = ANY($2::bytea[]) ORDER BY id "
        "FOR UPDATE",
        params);
    if (!pg::ok(r))
      return failed("cannot look up shares", r);
    for (int row = 0; row < pg::rows(r); ++row) {
      if (auto id = id_of(pg::bytes(r, row, 0)))
        sizes[*id] = pg::int64(r, row, 1);
    }
  }
  if (sizes.size() != distinct.size()) {
    std::set<Id> reported;
    for (const ShareRef& ref : refs) {
      if (!sizes.count(ref.id) && reported.insert(ref.id).second)
        missing.push_back(ref.id);
    }
    return Errc::missing_shares;
  }
  std::uint64_t stored_bytes = 0;
  for (const Id& id : new_ids)
    stored_bytes += static_cast<std::uint64_t>(sizes[id]);

  const auto deltas = ref_deltas(old_ids, new_ids);
  if (!deltas.empty()) {
    std::map<Id, std::uint32_t> chunk_counts;
    for (const ShareRef& ref : refs)
      chunk_counts.emplace(ref.id, ref.chunks);
    std::vector<Id> ids;
    std::vector<std::int64_t> amounts;
    std::vector<std::int64_t> counts;
    for (const auto& [id, delta] : deltas) {
      ids.push_back(id);
      amounts.push_back(delta);
      const auto it = chunk_counts.find(id);
      counts.push_back(delta > 0 && it != chunk_counts.end() ? std::int64_t{it->second} : -1);
    }
    pg::Params params;
    params.text(user_text).id_array(ids).int64_array(amounts).int64_array(counts).int64(
        now_seconds());
    // A share that loses its last reference starts its grace period.
    const pg::Result r = lease.exec(
        "UPDATE shares s SET refcount = s.refcount + d.delta, "
        "touched = CASE WHEN s.refcount + d.delta = 0 THEN $5 ELSE s.touched END, "
        "chunks = CASE WHEN d.chunks >= 0 THEN d.chunks ELSE s.chunks END "
        "FROM (SELECT unnest($2::bytea[]) AS id, unnest($3::bigint[]) AS delta, "
        "unnest($4::bigint[]) AS chunks) d WHERE s.usr = $1 AND s.id = d.id",
        params);
    if (!pg::ok(r))
      return failed("cannot update references", r);
    if (pg::affected(r) != static_cast<std::int64_t>(ids.size()))
      return corrupt("a referenced share has no index row");
  }

  const Bytes refs_blob = remove ? Bytes() : encode_refs(refs);
  {
    const std::int64_t record_bytes =
        remove ? 0 : static_cast<std::int64_t>(entry.size() + refs_blob.size() + manifest.size());
    const std::int64_t delta = record_bytes - old_record_bytes;
    if (delta != 0) {
      const pg::Result r = add_usage(lease, user_text, delta);
      if (!pg::ok(r) || pg::rows(r) != 1)
        return failed("cannot count the user's usage", r);
      if (over_quota(delta, pg::int64(r, 0, 0), quota))
        return Errc::quota_exceeded;
    }
  }
  if (remove) {
    pg::Params params;
    params.text(user_text).bytes(file_id);
    const pg::Result r = lease.exec("DELETE FROM files WHERE usr = $1 AND id = $2", params);
    if (!pg::ok(r))
      return failed("cannot delete file", r);
  } else {
    pg::Params params;
    params.text(user_text)
        .bytes(file_id)
        .int64(static_cast<std::int64_t>(version))
        .int64(static_cast<std::int64_t>(refs.size()))
        .int64(static_cast<std::int64_t>(chunks))
        .int64(static_cast<std::int64_t>(stored_bytes))
        .bytes(entry)
        .bytes(refs_blob)
        .bytes(manifest);
    const pg::Result r = lease.exec(
        "INSERT INTO files (usr, id, version, shares, chunks, stored_bytes, entry, refs, "
        "manifest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (usr, id) DO UPDATE "
        "SET version = excluded.version, shares = excluded.shares, chunks = excluded.chunks, "
        "stored_bytes = excluded.stored_bytes, entry = excluded.entry, refs = excluded.refs, "
        "manifest = excluded.manifest",
        params);
    if (!pg::ok(r))
      return failed("cannot write file", r);
  }
  const pg::Result done = tx.commit();
  if (!pg::ok(done))
    return failed("cannot commit file", done);
  return {};
}

std::error_code SharedStore::get_file(std::string_view user, const Id& file, FileRecord& out) {
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  pg::Params params;
  params.text(std::string(user)).bytes(ByteView(file.data(), file.size()));
  const pg::Result r =
      lease.exec("SELECT version, entry, manifest FROM files WHERE usr = $1 AND id = $2", params);
  if (!pg::ok(r))
    return lease.failed("cannot read file", r);
  if (pg::rows(r) == 0)
    return Errc::not_found;
  out.version = static_cast<std::uint64_t>(pg::int64(r, 0, 0));
  const ByteView entry = pg::bytes(r, 0, 1);
  const ByteView manifest = pg::bytes(r, 0, 2);
  out.entry.assign(entry.begin(), entry.end());
  out.manifest.assign(manifest.begin(), manifest.end());
  return {};
}

std::error_code SharedStore::list_files(std::string_view user, std::vector<FileSummary>& files) {
  files.clear();
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  pg::Params params;
  params.text(std::string(user));
  const pg::Result r =
      lease.exec("SELECT id, version, entry FROM files WHERE usr = $1 ORDER BY id", params);
  if (!pg::ok(r))
    return lease.failed("cannot list files", r);
  for (int row = 0; row < pg::rows(r); ++row) {
    const auto id = id_of(pg::bytes(r, row, 0));
    if (!id) {
      corrupt("file id malformed");
      continue;
    }
    FileSummary& summary = files.emplace_back();
    summary.file = *id;
    summary.version = static_cast<std::uint64_t>(pg::int64(r, row, 1));
    const ByteView entry = pg::bytes(r, row, 2);
    summary.entry.assign(entry.begin(), entry.end());
  }
  return {};
}

std::error_code SharedStore::file_info(std::string_view user, const Id& file, FileInfo& out) {
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  pg::Params params;
  params.text(std::string(user)).bytes(ByteView(file.data(), file.size()));
  const pg::Result r = lease.exec(
      "SELECT version, shares, chunks, stored_bytes FROM files WHERE usr = $1 AND id = $2", params);
  if (!pg::ok(r))
    return lease.failed("cannot read file", r);
  if (pg::rows(r) == 0)
    return Errc::not_found;
  out.version = static_cast<std::uint64_t>(pg::int64(r, 0, 0));
  out.shares = static_cast<std::uint64_t>(pg::int64(r, 0, 1));
  out.chunks = static_cast<std::uint64_t>(pg::int64(r, 0, 2));
  out.stored_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 3));
  return {};
}

std::error_code SharedStore::usage_of(Lease& lease, std::optional<std::string_view> user,
                                      Usage& out) {
  out = {};
  const std::string where = user ? " WHERE usr = $1" : "";
  pg::Params params;
  if (user)
    params.text(std::string(*user));
  std::uint64_t file_record_bytes = 0;
  {
    const pg::Result r = lease.exec(
        "SELECT count(*)::bigint, coalesce(sum(chunks), 0)::bigint, "
        "coalesce(sum(stored_bytes), 0)::bigint, "
        "coalesce(sum(length(entry) + length(refs) + length(manifest)), 0)::bigint FROM files" +
            where,
        params);
    if (!pg::ok(r) || pg::rows(r) != 1)
      return lease.failed("cannot count files", r);
    out.files = static_cast<std::uint64_t>(pg::int64(r, 0, 0));
    out.logical_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 1)) * kChunkBytes;
    out.referenced_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 2));
    file_record_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 3));
  }
  const pg::Result r = lease.exec(
      "SELECT count(*) FILTER (WHERE refcount > 0)::bigint, "
      "coalesce(sum(size) FILTER (WHERE refcount > 0), 0)::bigint, "
      "coalesce(sum(chunks) FILTER (WHERE refcount > 0), 0)::bigint, count(*)::bigint, "
      "coalesce(sum(size), 0)::bigint FROM shares" +
          where,
      params);
  if (!pg::ok(r) || pg::rows(r) != 1)
    return lease.failed("cannot count shares", r);
  out.shares = static_cast<std::uint64_t>(pg::int64(r, 0, 0));
  out.share_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 1));
  out.share_logical_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 2)) * kChunkBytes;
  const auto all_shares = static_cast<std::uint64_t>(pg::int64(r, 0, 3));
  const auto all_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 4));
  out.garbage_shares = all_shares - out.shares;
  out.garbage_bytes = all_bytes - out.share_bytes;
  out.disk_bytes = all_bytes + all_shares * pack::kRecordHeaderSize + file_record_bytes;
  return {};
}

std::error_code SharedStore::usage(std::string_view user, Usage& out) {
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  return usage_of(lease, user, out);
}

std::uint64_t SharedStore::index_bytes(Lease& lease) {
  const pg::Result r = lease.exec(
      "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c "
      "JOIN pg_namespace n ON n.oid = c.relnamespace "
      "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'S')");
  return pg::ok(r) && pg::rows(r) == 1 ? static_cast<std::uint64_t>(pg::int64(r, 0, 0)) : 0;
}

std::uint64_t SharedStore::object_bytes(Lease& lease) {
  const pg::Result r = lease.exec("SELECT coalesce(sum(size), 0)::bigint FROM packs");
  return pg::ok(r) && pg::rows(r) == 1 ? static_cast<std::uint64_t>(pg::int64(r, 0, 0)) : 0;
}

std::error_code SharedStore::stats(StoreStats& out) {
  out = {};
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  Transaction tx(lease, Transaction::Kind::snapshot);
  if (!tx.began())
    return lease.failed("cannot begin a read", {});
  if (auto ec = usage_of(lease, std::nullopt, out.total))
    return ec;
  const pg::Result r = lease.exec(
      "SELECT (SELECT count(*) FROM (SELECT usr FROM shares UNION SELECT usr FROM files) u)"
      "::bigint, (SELECT count(DISTINCT pack) FROM shares)::bigint, "
      "(SELECT count(*) FROM packs WHERE sealed)::bigint, "
      "(SELECT coalesce(sum(size), 0) FROM packs WHERE sealed)::bigint");
  if (!pg::ok(r) || pg::rows(r) != 1)
    return lease.failed("cannot count packs", r);
  out.users = static_cast<std::uint64_t>(pg::int64(r, 0, 0));
  const auto packs_with_rows = static_cast<std::uint64_t>(pg::int64(r, 0, 1));
  out.packs = static_cast<std::uint64_t>(pg::int64(r, 0, 2));
  out.pack_bytes = static_cast<std::uint64_t>(pg::int64(r, 0, 3));
  out.live_pack_bytes = packs_with_rows * pack::kFileHeaderSize + out.total.share_bytes +
                        out.total.garbage_bytes +
                        (out.total.shares + out.total.garbage_shares) * pack::kRecordHeaderSize;
  out.index_bytes = index_bytes(lease);
  const pg::Result last = lease.exec(
      "SELECT started, finished, grace, garbage_shares, garbage_bytes, packs_rewritten, "
      "packs_deleted, records_moved, bytes_moved, disk_before, disk_after, trigger "
      "FROM compactions ORDER BY id DESC LIMIT 1");
  if (pg::ok(last) && pg::rows(last) == 1) {
    CompactionReport c;
    c.started = pg::int64(last, 0, 0);
    c.finished = pg::int64(last, 0, 1);
    c.grace_seconds = pg::int64(last, 0, 2);
    c.garbage_shares = static_cast<std::uint64_t>(pg::int64(last, 0, 3));
    c.garbage_bytes = static_cast<std::uint64_t>(pg::int64(last, 0, 4));
    c.packs_rewritten = static_cast<std::uint64_t>(pg::int64(last, 0, 5));
    c.packs_deleted = static_cast<std::uint64_t>(pg::int64(last, 0, 6));
    c.records_moved = static_cast<std::uint64_t>(pg::int64(last, 0, 7));
    c.bytes_moved = static_cast<std::uint64_t>(pg::int64(last, 0, 8));
    c.disk_bytes_before = static_cast<std::uint64_t>(pg::int64(last, 0, 9));
    c.disk_bytes_after = static_cast<std::uint64_t>(pg::int64(last, 0, 10));
    c.trigger = pg::text(last, 0, 11);
    out.last_compaction = c;
  }
  return {};
}

std::error_code SharedStore::delete_pack(Lease& lease, std::int64_t number, CompactionReport& out) {
  // The object first: a row without its object would be a lost pack; an object without its row
  // is garbage the next compaction finds.
  if (auto ec = objects_.delete_object(pack_key(number)))
    return io_failure("cannot delete pack " + pack_key(number), ec.message());
  pg::Params params;
  params.int64(number);
  const pg::Result r = lease.exec(
      "DELETE FROM packs p WHERE number = $1 AND NOT EXISTS "
      "(SELECT 1 FROM shares s WHERE s.pack = p.number)",
      params);
  if (!pg::ok(r))
    return lease.failed("cannot forget a pack", r);
  ++out.packs_deleted;
  return {};
}

std::error_code SharedStore::rewrite_pack(Lease& lease, std::int64_t victim,
                                          CompactionReport& out) {
  struct Row {
    std::string user;
    Id id{};
    std::int64_t pos = 0;
    std::int64_t size = 0;
  };
  std::vector<Row> rows;
  {
    pg::Params params;
    params.int64(victim);
    const pg::Result r =
        lease.exec("SELECT usr, id, pos, size FROM shares WHERE pack = $1 ORDER BY pos", params);
    if (!pg::ok(r))
      return lease.failed("cannot list a pack's records", r);
    for (int row = 0; row < pg::rows(r); ++row) {
      const auto id = id_of(pg::bytes(r, row, 1));
      if (!id)
        continue;
      rows.push_back({pg::text(r, row, 0), *id, pg::int64(r, row, 2), pg::int64(r, row, 3)});
    }
  }
  Bytes input;
  if (auto ec = objects_.get_object(pack_key(victim), input))
    return io_failure("cannot read pack " + pack_key(victim), ec.message());
  Bytes output(pack::kFileMagic.begin(), pack::kFileMagic.end());
  std::vector<const Row*> moved;
  std::vector<std::int64_t> new_positions;
  std::uint64_t bytes = 0;
  for (const Row& row : rows) {
    const std::uint64_t end =
        static_cast<std::uint64_t>(row.pos) + pack::kRecordHeaderSize + row.size;
    if (row.pos < 0 || row.size < 0 || end > input.size()) {
      log_failure("compaction", "a record lies outside " + pack_key(victim) + "; it stays");
      continue;
    }
    pack::RecordHeader header{};
    std::copy_n(input.begin() + row.pos, header.size(), header.begin());
    const ByteView blob(input.data() + row.pos + header.size(), static_cast<std::size_t>(row.size));
    if (!pack::check_record(header, row.id, blob)) {
      log_failure("compaction", "a record failed its check and stays in " + pack_key(victim));
      continue;
    }
    new_positions.push_back(static_cast<std::int64_t>(output.size()));
    output.insert(output.end(), header.begin(), header.end());
    output.insert(output.end(), blob.begin(), blob.end());
    moved.push_back(&row);
    bytes += blob.size();
  }
  if (!moved.empty()) {
    std::int64_t number = 0;
    if (auto ec = new_pack(lease, static_cast<std::int64_t>(output.size()), number))
      return ec;
    const ByteView whole(output);
    if (auto ec = objects_.put_object(pack_key(number), std::span<const ByteView>(&whole, 1)))
      return io_failure("cannot store pack " + pack_key(number), ec.message());
    Transaction tx(lease);
    if (!tx.began())
      return lease.failed("cannot begin compaction", {});
    // Rows are moved one user at a time (the statement takes one user).
    std::map<std::string, std::vector<std::size_t>> by_user;
    for (std::size_t i = 0; i < moved.size(); ++i)
      by_user[moved[i]->user].push_back(i);
    for (const auto& [user, indices] : by_user) {
      std::vector<Id> ids;
      std::vector<std::int64_t> old_positions;
      std::vector<std::int64_t> positions;
      for (std::size_t i : indices) {
        ids.push_back(moved[i]->id);
        old_positions.push_back(moved[i]->pos);
        positions.push_back(new_positions[i]);
      }
      pg::Params params;
      params.text(user)
          .id_array(ids)
          .int64_array(old_positions)
          .int64_array(positions)
          .int64(victim)
          .int64(number);
      const pg::Result r = lease.exec(
          "UPDATE shares s SET pack = $6, pos = m.new_pos FROM (SELECT unnest($2::bytea[]) AS id, "
          "unnest($3::bigint[]) AS old_pos, unnest($4::bigint[]) AS new_pos) m "
          "WHERE s.usr = $1 AND s.id = m.id AND s.pack = $5 AND s.pos = m.old_pos",
          params);
      if (!pg::ok(r))
        return lease.failed("cannot move shares", r);
      out.records_moved += static_cast<std::uint64_t>(pg::affected(r));
    }
    pg::Params seal;
    seal.int64(number);
    const pg::Result sealed =
        lease.exec("UPDATE packs SET sealed = true WHERE number = $1 AND NOT sealed", seal);
    if (!pg::ok(sealed) || pg::affected(sealed) != 1)
      return lease.failed("cannot seal pack", sealed);
    const pg::Result done = tx.commit();
    if (!pg::ok(done))
      return lease.failed("cannot commit compaction", done);
    out.bytes_moved += bytes;
  }
  ++out.packs_rewritten;
  pg::Params params;
  params.int64(victim);
  const pg::Result left = lease.exec("SELECT count(*)::bigint FROM shares WHERE pack = $1", params);
  if (!pg::ok(left))
    return lease.failed("cannot count a pack's records", left);
  if (pg::int64(left, 0, 0) == 0)
    return delete_pack(lease, victim, out);
  return {};
}

std::error_code SharedStore::compact(const CompactOptions& options, CompactionReport& out) {
  out = {};
  // A connection of its own holds the compaction lock for the whole run.
  pg::Conn holder = connect();
  if (!holder)
    return Errc::io;
  {
    const std::string sql =
        "SELECT pg_try_advisory_lock(" + std::to_string(lock_key("maintenance")) + ")";
    const pg::Result r = pg::exec(holder.get(), sql);
    if (!pg::ok(r))
      return io_failure("cannot take the compaction lock", pg::error_text(holder.get(), r));
    if (!pg::boolean(r, 0, 0)) {
      log_failure("compaction skipped", "another process compacts or checks the store");
      return Errc::busy;
    }
  }
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  const std::chrono::seconds grace = options.grace.value_or(options_.garbage_grace);
  const auto stopping = [&] { return options.stop && options.stop->load(); };
  out.trigger = options.trigger;
  out.started = now_seconds();
  out.grace_seconds = grace.count();
  out.disk_bytes_before = object_bytes(lease) + index_bytes(lease);

  for (;;) {
    pg::Params params;
    params.int64(out.started - grace.count()).int64(kGarbageBatch);
    // Rows a put or a commit holds are skipped; the rest are rechecked once locked. The users'
    // counts drop in the same statement.
    const pg::Result r = lease.exec(
        "WITH gone AS (DELETE FROM shares WHERE (usr, id) IN (SELECT usr, id FROM shares "
        "WHERE refcount = 0 AND touched <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) "
        "RETURNING usr, size), "
        "freed AS (SELECT usr, sum(size + " +
            std::to_string(pack::kRecordHeaderSize) +
            ")::bigint AS bytes FROM gone GROUP BY usr), "
            "counted AS (UPDATE user_usage u SET disk_bytes = u.disk_bytes - f.bytes FROM freed f "
            "WHERE u.usr = f.usr) "
            "SELECT size FROM gone",
        params);
    if (!pg::ok(r))
      return lease.failed("cannot drop unreferenced shares", r);
    out.garbage_shares += static_cast<std::uint64_t>(pg::rows(r));
    for (int row = 0; row < pg::rows(r); ++row)
      out.garbage_bytes += static_cast<std::uint64_t>(pg::int64(r, row, 0));
    if (pg::rows(r) < kGarbageBatch)
      break;
  }

  // Packs a put abandoned long ago, and objects whose row is gone (listed before the rows are
  // read: a row always exists before its object does).
  std::vector<objectstore::ObjectInfo> objects;
  if (auto ec = objects_.list("packs/", objects))
    return io_failure("cannot list pack objects", ec.message());
  {
    pg::Params params;
    params.int64(out.started - kStaleUnsealedSeconds);
    const pg::Result stale = lease.exec(
        "DELETE FROM packs p WHERE NOT sealed AND created < $1 AND NOT EXISTS "
        "(SELECT 1 FROM shares s WHERE s.pack = p.number)",
        params);
    if (!pg::ok(stale))
      return lease.failed("cannot drop abandoned packs", stale);
  }
  std::set<std::string> known;
  {
    const pg::Result r = lease.exec("SELECT number FROM packs");
    if (!pg::ok(r))
      return lease.failed("cannot list packs", r);
    for (int row = 0; row < pg::rows(r); ++row)
      known.insert(pack_key(pg::int64(r, row, 0)));
  }
  for (const auto& object : objects) {
    if (stopping())
      break;
    if (known.count(object.key))
      continue;
    if (auto ec = objects_.delete_object(object.key))
      return io_failure("cannot delete pack " + object.key, ec.message());
    ++out.packs_deleted;
  }

  struct Live {
    std::int64_t number;
    std::int64_t size;
    std::int64_t records;
    std::int64_t bytes;
  };
  std::vector<Live> packs;
  {
    const pg::Result r = lease.exec(
        "SELECT p.number, p.size, count(s.id)::bigint, coalesce(sum(s.size), 0)::bigint "
        "FROM packs p LEFT JOIN shares s ON s.pack = p.number WHERE p.sealed "
        "GROUP BY p.number, p.size ORDER BY p.number");
    if (!pg::ok(r))
      return lease.failed("cannot measure packs", r);
    for (int row = 0; row < pg::rows(r); ++row)
      packs.push_back(
          {pg::int64(r, row, 0), pg::int64(r, row, 1), pg::int64(r, row, 2), pg::int64(r, row, 3)});
  }
  for (const Live& p : packs) {
    if (stopping())
      break;
    if (p.records == 0) {
      if (auto ec = delete_pack(lease, p.number, out))
        return ec;
      continue;
    }
    const double used =
        static_cast<double>(pack::kFileHeaderSize + p.bytes + p.records * pack::kRecordHeaderSize);
    if (used <= (1.0 - options_.rewrite_dead_fraction) * static_cast<double>(p.size)) {
      if (auto ec = rewrite_pack(lease, p.number, out))
        return ec;
    }
  }

  out.finished = now_seconds();
  out.disk_bytes_after = object_bytes(lease) + index_bytes(lease);
  pg::Params params;
  params.text(out.trigger)
      .int64(out.started)
      .int64(out.finished)
      .int64(out.grace_seconds)
      .int64(static_cast<std::int64_t>(out.garbage_shares))
      .int64(static_cast<std::int64_t>(out.garbage_bytes))
      .int64(static_cast<std::int64_t>(out.packs_rewritten))
      .int64(static_cast<std::int64_t>(out.packs_deleted))
      .int64(static_cast<std::int64_t>(out.records_moved))
      .int64(static_cast<std::int64_t>(out.bytes_moved))
      .int64(static_cast<std::int64_t>(out.disk_bytes_before))
      .int64(static_cast<std::int64_t>(out.disk_bytes_after))
      .int64(detail::kCompactionHistory);
  const pg::Result r = lease.exec(
      "WITH added AS (INSERT INTO compactions (trigger, started, finished, grace, garbage_shares, "
      "garbage_bytes, packs_rewritten, packs_deleted, records_moved, bytes_moved, disk_before, "
      "disk_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id) "
      "DELETE FROM compactions WHERE id <= (SELECT id FROM added) - $13",
      params);
  if (!pg::ok(r))
    return lease.failed("cannot record the compaction", r);
  return {};
}

std::error_code SharedStore::check_user(Lease& lease, const std::string& user, CheckReport& out) {
  pg::Params params;
  params.text(user);
  const pg::Result files =
      lease.exec("SELECT id, shares, chunks, stored_bytes, refs FROM files WHERE usr = $1", params);
  if (!pg::ok(files))
    return lease.failed("cannot read files", files);
  const pg::Result shares = lease.exec(
      "SELECT id, refcount, chunks, size FROM shares WHERE usr = $1 ORDER BY id", params);
  if (!pg::ok(shares))
    return lease.failed("cannot read shares", shares);
  struct Held {
    std::int64_t refcount = 0;
    std::int64_t chunks = 0;
    std::int64_t size = 0;
    std::int64_t references = 0;
    bool chunks_agree = true;
  };
  std::map<Id, Held> held;
  for (int row = 0; row < pg::rows(shares); ++row) {
    ++out.shares;
    const auto id = id_of(pg::bytes(shares, row, 0));
    if (!id) {
      out.problem("a share of user '" + user + "' has a malformed id");
      continue;
    }
    held[*id] = {pg::int64(shares, row, 1), pg::int64(shares, row, 2), pg::int64(shares, row, 3)};
  }
  std::vector<ShareRef> refs;
  for (int row = 0; row < pg::rows(files); ++row) {
    ++out.files;
    const auto file = id_of(pg::bytes(files, row, 0));
    const std::string name =
        "file " + (file ? hex_prefix(*file) : std::string("?")) + " of user '" + user + "'";
    if (!file || !decode_refs(pg::bytes(files, row, 4), refs)) {
      out.problem(name + ": malformed id or references");
      continue;
    }
    std::uint64_t chunks = 0;
    std::uint64_t stored = 0;
    std::map<Id, std::size_t> lost;
    for (const ShareRef& ref : refs) {
      chunks += ref.chunks;
      const auto it = held.find(ref.id);
      if (it == held.end()) {
        ++lost[ref.id];
        continue;
      }
      ++it->second.references;
      it->second.chunks_agree = it->second.chunks_agree && it->second.chunks == ref.chunks;
      stored += static_cast<std::uint64_t>(it->second.size);
    }
    for (const auto& [id, count] : lost)
      out.problem("share " + hex_prefix(id) + " of user '" + user + "' is referenced " +
                  std::to_string(count) + " times but not held: committed data is lost");
    if (static_cast<std::uint64_t>(pg::int64(files, row, 1)) != refs.size() ||
        static_cast<std::uint64_t>(pg::int64(files, row, 2)) != chunks)
      out.problem(name + ": share or chunk count disagrees with its references");
    if (lost.empty() && static_cast<std::uint64_t>(pg::int64(files, row, 3)) != stored)
      out.problem(name + ": stored size disagrees with its shares");
  }
  const pg::Result counted = lease.exec(
      "SELECT coalesce((SELECT disk_bytes FROM user_usage WHERE usr = $1), 0)::bigint, "
      "((SELECT coalesce(sum(size + " +
          std::to_string(pack::kRecordHeaderSize) +
          "), 0) FROM shares WHERE usr = $1) + (SELECT coalesce(sum(length(entry) + "
          "length(refs) + length(manifest)), 0) FROM files WHERE usr = $1))::bigint",
      params);
  if (!pg::ok(counted) || pg::rows(counted) != 1)
    return lease.failed("cannot read the user's usage", counted);
  if (pg::int64(counted, 0, 0) != pg::int64(counted, 0, 1))
    out.problem("user '" + user + "' is counted as holding " +
                std::to_string(pg::int64(counted, 0, 0)) + " bytes for its quota, but holds " +
                std::to_string(pg::int64(counted, 0, 1)));
  for (const auto& [id, h] : held) {
    const std::string name = "share " + hex_prefix(id) + " of user '" + user + "'";
    if (h.refcount != h.references)
      out.problem(name + ": refcount " + std::to_string(h.refcount) + ", but " +
                  std::to_string(h.references) + " references");
    if (h.references > 0 && !h.chunks_agree)
      out.problem(name + ": chunk count disagrees with its references");
  }
  return {};
}

std::error_code SharedStore::check_records(Lease& lease, CheckReport& out) {
  const pg::Result packs = lease.exec("SELECT number, sealed, size FROM packs ORDER BY number");
  if (!pg::ok(packs))
    return lease.failed("cannot list packs", packs);
  std::map<std::int64_t, std::pair<bool, std::int64_t>> known;
  for (int row = 0; row < pg::rows(packs); ++row)
    known[pg::int64(packs, row, 0)] = {pg::boolean(packs, row, 1), pg::int64(packs, row, 2)};
  const pg::Result records =
      lease.exec("SELECT pack, pos, size, id, usr FROM shares ORDER BY pack, pos");
  if (!pg::ok(records))
    return lease.failed("cannot list records", records);
  std::int64_t current = -1;
  Bytes data;
  bool readable = false;
  std::int64_t previous_end = 0;
  for (int row = 0; row < pg::rows(records); ++row) {
    const std::int64_t number = pg::int64(records, row, 0);
    const std::int64_t pos = pg::int64(records, row, 1);
    const std::int64_t size = pg::int64(records, row, 2);
    const auto id = id_of(pg::bytes(records, row, 3));
    const std::string name = "share " + (id ? hex_prefix(*id) : std::string("?")) + " of user '" +
                             pg::text(records, row, 4) + "'";
    if (number != current) {
      current = number;
      previous_end = pack::kFileHeaderSize;
      const auto it = known.find(number);
      if (it == known.end() || !it->second.first) {
        out.problem(pack_key(number) + " holds records but is not a sealed pack");
        readable = false;
        continue;
      }
      ++out.packs;
      const std::error_code ec = objects_.get_object(pack_key(number), data);
      readable = !ec;
      if (ec == objectstore::Errc::not_found) {
        out.problem(pack_key(number) + " is missing from the object store");
      } else if (ec) {
        return io_failure("cannot read pack " + pack_key(number), ec.message());
      } else if (static_cast<std::int64_t>(data.size()) != it->second.second ||
                 !std::equal(pack::kFileMagic.begin(), pack::kFileMagic.end(), data.begin())) {
        out.problem(pack_key(number) + " has the wrong size or header");
      }
    }
    if (!readable)
      continue;
    const std::int64_t end = pos + static_cast<std::int64_t>(pack::kRecordHeaderSize) + size;
    if (!id || pos < previous_end || size < 0 || end > static_cast<std::int64_t>(data.size())) {
      out.problem(name + ": its record overlaps another or lies outside " + pack_key(number));
      continue;
    }
    previous_end = end;
    pack::RecordHeader header{};
    std::copy_n(data.begin() + pos, header.size(), header.begin());
    const ByteView blob(data.data() + pos + header.size(), static_cast<std::size_t>(size));
    if (!pack::check_record(header, *id, blob))
      out.problem(name + ": its record in " + pack_key(number) + " fails its checksum");
    else
      out.bytes_verified += static_cast<std::uint64_t>(size);
  }
  return {};
}

std::error_code SharedStore::check(CheckReport& out) {
  out = {};
  pg::Conn holder = connect();
  if (!holder)
    return Errc::io;
  {
    // Waits for a running compaction and keeps the next from starting until the check is done.
    const std::string sql = "SET lock_timeout = '" + std::to_string(kCheckWait.count()) +
                            "s'; SET statement_timeout = 0; SELECT pg_advisory_lock_shared(" +
                            std::to_string(lock_key("maintenance")) + ")";
    pg::Result r(PQexec(holder.get(), sql.c_str()));
    if (!pg::ok(r))
      return io_failure("cannot wait for compaction", pg::error_text(holder.get(), r));
  }
  Lease lease = borrow();
  if (!lease)
    return Errc::io;
  Transaction tx(lease, Transaction::Kind::snapshot);
  if (!tx.began())
    return lease.failed("cannot begin a read", {});
  const pg::Result users =
      lease.exec("SELECT usr FROM shares UNION SELECT usr FROM files ORDER BY 1");
  if (!pg::ok(users))
    return lease.failed("cannot list users", users);
  for (int row = 0; row < pg::rows(users); ++row) {
    ++out.users;
    if (auto ec = check_user(lease, pg::text(users, row, 0), out))
      return ec;
  }
  if (auto ec = check_records(lease, out))
    return ec;
  const pg::Result garbage = lease.exec("SELECT count(*)::bigint FROM shares WHERE refcount = 0");
  if (pg::ok(garbage) && pg::int64(garbage, 0, 0) > 0)
    out.notes.push_back(std::to_string(pg::int64(garbage, 0, 0)) +
                        " unreferenced shares await compaction");
  return {};
}

}  // namespace

void lay_out_pack(std::span<const ShareInput> shares, PackLayout& out) {
  out.headers.clear();
  out.parts.clear();
  out.positions.clear();
  out.headers.reserve(shares.size());
  for (const ShareInput& share : shares)
    out.headers.push_back(pack::make_header(share.id, share.data));
  out.parts.reserve(2 * shares.size() + 1);
  out.parts.emplace_back(pack::kFileMagic.data(), pack::kFileMagic.size());
  std::int64_t end = pack::kFileHeaderSize;
  for (std::size_t i = 0; i < shares.size(); ++i) {
    out.parts.emplace_back(out.headers[i].data(), out.headers[i].size());
    out.parts.push_back(shares[i].data);
    out.positions.push_back(end);
    end += static_cast<std::int64_t>(pack::kRecordHeaderSize + shares[i].data.size());
  }
  out.size = end;
}

std::string pack_key(std::int64_t number) {
  char text[32];
  std::snprintf(text, sizeof text, "packs/%016llx", static_cast<unsigned long long>(number));
  return text;
}

std::optional<IndexLocation> parse_index(std::string_view text, std::string& error) {
  std::string uri(text);
  if (uri.rfind("postgresql://", 0) != 0 && uri.rfind("postgres://", 0) != 0) {
    std::ifstream in{std::filesystem::path(uri)};
    std::string line;
    if (!in || !std::getline(in, line)) {
      error = "the index is postgresql://USER@HOST:PORT/DATABASE, or a file holding that";
      return std::nullopt;
    }
    while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
      line.pop_back();
    uri = line;
    if (uri.rfind("postgresql://", 0) != 0 && uri.rfind("postgres://", 0) != 0) {
      error = "the index file's first line is not a postgresql:// URI";
      return std::nullopt;
    }
  }
  const auto authority_start = uri.find("://") + 3;
  const auto authority_end = uri.find_first_of("/?", authority_start);
  const std::string authority = uri.substr(authority_start, authority_end - authority_start);
  const auto at = authority.rfind('@');
  if (at != std::string::npos && authority.substr(0, at).find(':') != std::string::npos) {
    error = "the index URI must not hold a password: put it in PGPASSFILE or ~/.pgpass";
    return std::nullopt;
  }
  IndexLocation location;
  const auto query_at = uri.find('?');
  if (query_at != std::string::npos) {
    std::string kept;
    std::string_view query = std::string_view(uri).substr(query_at + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
      if (pair.rfind("password=", 0) == 0) {
        error = "the index URI must not hold a password: put it in PGPASSFILE or ~/.pgpass";
        return std::nullopt;
      }
      if (pair.rfind("schema=", 0) == 0) {
        location.schema = std::string(pair.substr(7));
        continue;
      }
      kept += (kept.empty() ? "" : "&") + std::string(pair);
    }
    uri = uri.substr(0, query_at) + (kept.empty() ? "" : "?" + kept);
  }
  if (!valid_schema(location.schema)) {
    error = "the index schema must be 1 to 48 lowercase letters, digits or '_'";
    return std::nullopt;
  }
  // A connection attempt never waits forever.
  if (uri.find("connect_timeout=") == std::string::npos)
    uri += (uri.find('?') == std::string::npos ? "?" : "&") + std::string("connect_timeout=10");
  location.conninfo = uri;
  return location;
}

std::unique_ptr<Store> open_shared(const SharedLocation& location, const Options& options) {
  return std::make_unique<SharedStore>(location, options);
}

std::unique_ptr<Store> open_shared(std::string_view backend, std::string_view index,
                                   const std::filesystem::path& credentials_file,
                                   const Options& options) {
  SharedLocation location;
  std::string error;
  auto objects = objectstore::parse_location(backend, error);
  if (!objects)
    throw StoreError("--backend: " + error);
  location.objects = *objects;
  if (index.empty())
    throw StoreError("--backend needs --index postgresql://USER@HOST:PORT/DATABASE");
  auto parsed = parse_index(index, error);
  if (!parsed)
    throw StoreError("--index: " + error);
  location.index = *parsed;
  try {
    location.credentials = objectstore::load_credentials(credentials_file);
  } catch (const std::runtime_error& e) {
    throw StoreError(e.what());
  }
  return open_shared(location, options);
}

}  // namespace splitfs::store
