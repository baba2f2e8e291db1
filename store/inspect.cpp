#include "store/inspect.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <set>
#include <string>
#include <thread>

#include "store/sqlite.hpp"

namespace splitfs::store {

namespace fs = std::filesystem;

double Usage::dedup_ratio() const {
  return share_logical_bytes == 0
             ? 1.0
             : static_cast<double>(logical_bytes) / static_cast<double>(share_logical_bytes);
}

double Usage::compression_ratio() const {
  return share_bytes == 0
             ? 1.0
             : static_cast<double>(share_logical_bytes) / static_cast<double>(share_bytes);
}

void CheckReport::problem(std::string text) {
  ++problem_count;
  if (problems.size() < kMaxListed)
    problems.push_back(std::move(text));
}

namespace detail {

namespace {

constexpr auto kLockPoll = std::chrono::milliseconds(50);

std::error_code failure(sqlite3* db, std::string_view what) {
  const std::string detail = sql::last_error(db);
  std::fprintf(stderr, "splitfs store: %.*s: %s\n", static_cast<int>(what.size()), what.data(),
               detail.c_str());
  return Errc::io;
}

std::string hex_prefix(ByteView id) {
  static const char* const digits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < std::min<std::size_t>(id.size(), 8); ++i) {
    out += digits[id[i] >> 4];
    out += digits[id[i] & 15];
  }
  return out + "...";
}

std::string pack_name(std::int64_t number) {
  return number >= 1 && number <= pack::kMaxNumber
             ? pack::file_name(static_cast<std::uint32_t>(number))
             : "pack " + std::to_string(number);
}

// Runs a statement prepared for one use; `row` sees each result row.
template <typename Bind, typename Row>
std::error_code query(sqlite3* db, std::string_view text, Bind&& bind, Row&& row) {
  sql::Stmt stmt;
  if (sql::prepare(db, text, stmt) != SQLITE_OK)
    return failure(db, "cannot prepare a query");
  sql::Use use(stmt);
  bind(use);
  int rc;
  while ((rc = use.step()) == SQLITE_ROW)
    row(use);
  if (rc != SQLITE_DONE)
    return failure(db, "cannot read the index");
  return {};
}

auto no_binding = [](sql::Use&) {};

struct Record {
  std::int64_t pos = 0;
  std::int64_t size = 0;
};

// Everything about the shares of one user: refcounts against the files' references, chunks, and
// each file's summary columns against its references. Memory: one entry per reference and per
// referenced share of this user.
std::error_code check_user(sqlite3* db, const std::string& user, CheckReport& out) {
  const auto by_id = [](const ShareRef& a, const ShareRef& b) { return a.id < b.id; };
  const auto bind_user = [&](sql::Use& q) { q.bind(1, user); };
  const auto file_name = [&](ByteView file) {
    return "file " + hex_prefix(file) + " of user '" + user + "'";
  };
  std::vector<ShareRef> refs;  // every reference occurrence of every file
  std::vector<ShareRef> decoded;
  std::error_code ec =
      query(db, "SELECT id, shares, chunks, refs FROM files WHERE user = ?1", bind_user,
            [&](const sql::Use& q) {
              ++out.files;
              if (q.blob(0).size() != sizeof(Id)) {
                out.problem(file_name(q.blob(0)) + ": malformed id");
                return;
              }
              if (!decode_refs(q.blob(3), decoded)) {
                out.problem(file_name(q.blob(0)) + ": malformed references");
                return;
              }
              std::uint64_t chunks = 0;
              for (const ShareRef& r : decoded)
                chunks += r.chunks;
              if (static_cast<std::uint64_t>(q.int64(1)) != decoded.size() ||
                  static_cast<std::uint64_t>(q.int64(2)) != chunks) {
                out.problem(file_name(q.blob(0)) +
                            ": share or chunk count disagrees with its references");
              }
              refs.insert(refs.end(), decoded.begin(), decoded.end());
            });
  if (ec)
    return ec;
  std::sort(refs.begin(), refs.end(), by_id);

  std::vector<std::pair<Id, std::uint64_t>> sizes;  // referenced shares, sorted by id
  std::size_t next = 0;                             // first entry of `refs` not yet matched
  const auto report_missing = [&](const Id* upto) {
    while (next < refs.size() && (!upto || refs[next].id < *upto)) {
      const Id id = refs[next].id;
      std::size_t count = 0;
      for (; next < refs.size() && refs[next].id == id; ++next)
        ++count;
      out.problem("share " + hex_prefix(ByteView(id.data(), id.size())) + " of user '" + user +
                  "' is referenced " + std::to_string(count) +
                  " times but not held: committed data is lost");
    }
  };
  ec = query(db, "SELECT id, refcount, chunks, size FROM shares WHERE user = ?1 ORDER BY id",
             bind_user, [&](const sql::Use& q) {
               ++out.shares;
               const ByteView raw = q.blob(0);
               const std::string name = "share " + hex_prefix(raw) + " of user '" + user + "'";
               if (raw.size() != sizeof(Id)) {
                 out.problem(name + ": malformed id");
                 return;
               }
               Id id{};
               std::copy(raw.begin(), raw.end(), id.begin());
               report_missing(&id);
               std::int64_t expected = 0;
               bool chunks_agree = true;
               for (; next < refs.size() && refs[next].id == id; ++next) {
                 ++expected;
                 chunks_agree = chunks_agree && refs[next].chunks == q.int64(2);
               }
               if (q.int64(1) != expected) {
                 out.problem(name + ": refcount " + std::to_string(q.int64(1)) + ", but " +
                             std::to_string(expected) + " references");
               }
               if (expected > 0) {
                 if (!chunks_agree)
                   out.problem(name + ": chunk count disagrees with its references");
                 sizes.emplace_back(id, static_cast<std::uint64_t>(q.int64(3)));
               }
             });
  if (ec)
    return ec;
  report_missing(nullptr);
  refs = {};

  return query(db, "SELECT id, stored_bytes, refs FROM files WHERE user = ?1", bind_user,
               [&](const sql::Use& q) {
                 if (!decode_refs(q.blob(2), decoded))
                   return;
                 std::uint64_t total = 0;
                 for (const ShareRef& r : decoded) {
                   auto it = std::lower_bound(sizes.begin(), sizes.end(), r.id,
                                              [](const std::pair<Id, std::uint64_t>& e,
                                                 const Id& id) { return e.first < id; });
                   if (it != sizes.end() && it->first == r.id)
                     total += it->second;
                 }
                 if (total != static_cast<std::uint64_t>(q.int64(1)))
                   out.problem(file_name(q.blob(0)) + ": stored size disagrees with its shares");
               });
}

// Every record the index names: in an indexed pack that exists, inside it, not overlapping
// another, and passing its checksum.
std::error_code check_records(sqlite3* db, const fs::path& dir, CheckReport& out,
                              std::set<std::int64_t>& packs_with_rows) {
  std::set<std::int64_t> indexed;
  std::error_code ec = query(db, "SELECT number FROM packs", no_binding,
                             [&](const sql::Use& q) { indexed.insert(q.int64(0)); });
  if (ec)
    return ec;

  std::int64_t current = 0;  // the pack being read
  pack::Fd fd;
  std::uint64_t file_size = 0;
  bool missing = false;
  std::uint64_t missing_shares = 0;
  std::int64_t end_of_last = 0;
  Bytes blob;
  auto finish_pack = [&] {
    if (missing && missing_shares > 0) {
      out.problem(pack_name(current) + " is missing: " + std::to_string(missing_shares) +
                  " shares in it are lost");
    }
  };
  ec = query(db, "SELECT user, id, pack, pos, size FROM shares ORDER BY pack, pos", no_binding,
             [&](const sql::Use& q) {
               const std::int64_t number = q.int64(2);
               const std::int64_t pos = q.int64(3);
               const std::int64_t size = q.int64(4);
               if (number != current) {
                 finish_pack();
                 current = number;
                 packs_with_rows.insert(number);
                 fd.reset();
                 missing = false;
                 missing_shares = 0;
                 end_of_last = 0;
                 if (!indexed.count(number))
                   out.problem(pack_name(number) + " holds shares but is not in the pack table");
                 std::error_code open_error;
                 if (number < 1 || number > pack::kMaxNumber) {
                   open_error = std::make_error_code(std::errc::invalid_argument);
                 } else {
                   open_error =
                       pack::open_file(dir / kPacksDir / pack::file_name(number), O_RDONLY, 0, fd);
                 }
                 struct stat st {};
                 if (!open_error && ::fstat(fd.get(), &st) != 0)
                   open_error = std::error_code(errno, std::system_category());
                 if (open_error) {
                   missing = true;
                 } else {
                   file_size = static_cast<std::uint64_t>(st.st_size);
                 }
               }
               if (missing) {
                 ++missing_shares;
                 return;
               }
               const ByteView raw_id = q.blob(1);
               const std::string where = pack_name(number) + " at " + std::to_string(pos);
               if (raw_id.size() != sizeof(Id) || size < 0 ||
                   size > static_cast<std::int64_t>(pack::kMaxBlobBytes) ||
                   pos < static_cast<std::int64_t>(pack::kFileHeaderSize) ||
                   static_cast<std::uint64_t>(pos) + pack::kRecordHeaderSize +
                           static_cast<std::uint64_t>(size) >
                       file_size) {
                 out.problem(where + ": the index names a record outside the pack");
                 return;
               }
               if (pos < end_of_last)
                 out.problem(where + ": the record overlaps the one before it");
               end_of_last = pos + static_cast<std::int64_t>(pack::kRecordHeaderSize) + size;
               Id id{};
               std::copy(raw_id.begin(), raw_id.end(), id.begin());
               pack::RecordHeader header{};
               blob.resize(static_cast<std::size_t>(size));
               iovec iov[2] = {{header.data(), header.size()}, {blob.data(), blob.size()}};
               bool short_read = false;
               const std::error_code read_error =
                   pack::read_all(fd.get(), iov, static_cast<std::uint64_t>(pos), short_read);
               if (read_error || short_read || !pack::check_record(header, id, blob)) {
                 out.problem(where + ": share " + hex_prefix(raw_id) + " of user '" + q.text(0) +
                             "' fails its checksum");
                 return;
               }
               out.bytes_verified += static_cast<std::uint64_t>(size);
             });
  finish_pack();
  return ec;
}

}  // namespace

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

bool decode_refs(ByteView blob, std::vector<ShareRef>& refs) {
  refs.clear();
  if (blob.size() % kRefBytes != 0)
    return false;
  refs.resize(blob.size() / kRefBytes);
  const std::uint8_t* p = blob.data();
  for (ShareRef& ref : refs) {
    std::copy_n(p, 32, ref.id.begin());
    ref.chunks = std::uint32_t{p[32]} | std::uint32_t{p[33]} << 8 | std::uint32_t{p[34]} << 16 |
                 std::uint32_t{p[35]} << 24;
    p += kRefBytes;
  }
  return true;
}

std::error_code usage_of(sqlite3* db, std::optional<std::string_view> user, Usage& out) {
  out = {};
  const std::string where = user ? " WHERE user = ?1" : "";
  auto bind = [&](sql::Use& q) {
    if (user)
      q.bind(1, *user);
  };
  std::uint64_t file_record_bytes = 0;
  std::error_code ec =
      query(db,
            "SELECT count(*), coalesce(sum(chunks), 0), coalesce(sum(stored_bytes), 0), "
            "coalesce(sum(length(entry) + length(refs) + length(manifest)), 0) FROM files" +
                where,
            bind, [&](const sql::Use& q) {
              out.files = static_cast<std::uint64_t>(q.int64(0));
              out.logical_bytes = static_cast<std::uint64_t>(q.int64(1)) * kChunkBytes;
              out.referenced_bytes = static_cast<std::uint64_t>(q.int64(2));
              file_record_bytes = static_cast<std::uint64_t>(q.int64(3));
            });
  if (ec)
    return ec;
  std::uint64_t all_shares = 0;
  std::uint64_t all_bytes = 0;
  ec = query(db,
             "SELECT coalesce(sum(refcount > 0), 0), "
             "coalesce(sum(CASE WHEN refcount > 0 THEN size END), 0), "
             "coalesce(sum(CASE WHEN refcount > 0 THEN chunks END), 0), count(*), "
             "coalesce(sum(size), 0) FROM shares" +
                 where,
             bind, [&](const sql::Use& q) {
               out.shares = static_cast<std::uint64_t>(q.int64(0));
               out.share_bytes = static_cast<std::uint64_t>(q.int64(1));
               out.share_logical_bytes = static_cast<std::uint64_t>(q.int64(2)) * kChunkBytes;
               all_shares = static_cast<std::uint64_t>(q.int64(3));
               all_bytes = static_cast<std::uint64_t>(q.int64(4));
             });
  if (ec)
    return ec;
  out.garbage_shares = all_shares - out.shares;
  out.garbage_bytes = all_bytes - out.share_bytes;
  out.disk_bytes = all_bytes + all_shares * pack::kRecordHeaderSize + file_record_bytes;
  return {};
}

std::uint64_t index_bytes(const fs::path& dir) {
  std::uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    struct stat st {};
    if (::stat((dir / (std::string(kIndexFile) + suffix)).c_str(), &st) == 0)
      total += static_cast<std::uint64_t>(st.st_size);
  }
  return total;
}

std::error_code list_packs(const fs::path& dir,
                           std::vector<std::pair<std::uint32_t, std::uint64_t>>& out) {
  out.clear();
  std::error_code ec;
  for (fs::directory_iterator it(dir / kPacksDir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto number = pack::parse_file_name(it->path().filename().string());
    if (!number)
      continue;
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0)
      continue;  // unlinked by a compaction since the listing
    out.emplace_back(*number, static_cast<std::uint64_t>(st.st_size));
  }
  std::sort(out.begin(), out.end());
  return ec;
}

std::optional<CompactionReport> last_compaction(sqlite3* db,
                                                std::optional<std::string_view> trigger) {
  std::optional<CompactionReport> last;
  query(
      db,
      std::string("SELECT started, finished, grace, garbage_shares, garbage_bytes, "
                  "packs_rewritten, packs_deleted, records_moved, bytes_moved, disk_before, "
                  "disk_after, trigger FROM compactions") +
          (trigger ? " WHERE trigger = ?1" : "") + " ORDER BY id DESC LIMIT 1",
      [&](sql::Use& q) {
        if (trigger)
          q.bind(1, *trigger);
      },
      [&](const sql::Use& q) {
        CompactionReport r;
        r.started = q.int64(0);
        r.finished = q.int64(1);
        r.grace_seconds = q.int64(2);
        r.garbage_shares = static_cast<std::uint64_t>(q.int64(3));
        r.garbage_bytes = static_cast<std::uint64_t>(q.int64(4));
        r.packs_rewritten = static_cast<std::uint64_t>(q.int64(5));
        r.packs_deleted = static_cast<std::uint64_t>(q.int64(6));
        r.records_moved = static_cast<std::uint64_t>(q.int64(7));
        r.bytes_moved = static_cast<std::uint64_t>(q.int64(8));
        r.disk_bytes_before = static_cast<std::uint64_t>(q.int64(9));
        r.disk_bytes_after = static_cast<std::uint64_t>(q.int64(10));
        r.trigger = q.text(11);
        last = r;
      });
  return last;
}

std::error_code collect_stats(sqlite3* db, const fs::path& dir, StoreStats& out) {
  out = {};
  if (sql::exec(db, "BEGIN") != SQLITE_OK)
    return failure(db, "cannot begin a read");
  struct End {
    sqlite3* db;
    ~End() { sql::exec(db, "ROLLBACK"); }
  } end{db};
  if (auto ec = usage_of(db, std::nullopt, out.total))
    return ec;
  std::uint64_t packs_with_rows = 0;
  std::error_code ec =
      query(db,
            "SELECT (SELECT count(*) FROM (SELECT user FROM shares UNION SELECT user FROM files)), "
            "(SELECT count(DISTINCT pack) FROM shares)",
            no_binding, [&](const sql::Use& q) {
              out.users = static_cast<std::uint64_t>(q.int64(0));
              packs_with_rows = static_cast<std::uint64_t>(q.int64(1));
            });
  if (ec)
    return ec;
  out.live_pack_bytes = packs_with_rows * pack::kFileHeaderSize + out.total.share_bytes +
                        out.total.garbage_bytes +
                        (out.total.shares + out.total.garbage_shares) * pack::kRecordHeaderSize;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> packs;
  if (auto list_error = list_packs(dir, packs)) {
    std::fprintf(stderr, "splitfs store: cannot list packs: %s\n", list_error.message().c_str());
    return Errc::io;
  }
  out.packs = packs.size();
  for (const auto& [number, size] : packs)
    out.pack_bytes += size;
  out.index_bytes = index_bytes(dir);
  out.last_compaction = last_compaction(db);
  return {};
}

std::error_code run_check(sqlite3* db, const fs::path& dir, CheckReport& out) {
  out = {};
  std::error_code ec = query(db, "PRAGMA quick_check", no_binding, [&](const sql::Use& q) {
    const std::string line = q.text(0);
    if (line != "ok")
      out.problem("index: " + line);
  });
  if (ec)
    return ec;

  // One snapshot for everything below: rows committed meanwhile are not seen, and records are
  // never moved or unlinked while the caller holds the maintenance lock.
  if (sql::exec(db, "BEGIN") != SQLITE_OK)
    return failure(db, "cannot begin a read");
  struct End {
    sqlite3* db;
    ~End() { sql::exec(db, "ROLLBACK"); }
  } end{db};

  std::set<std::int64_t> packs_with_rows;
  if ((ec = check_records(db, dir, out, packs_with_rows)))
    return ec;

  std::vector<std::string> users;
  ec = query(db, "SELECT user FROM shares UNION SELECT user FROM files ORDER BY 1", no_binding,
             [&](const sql::Use& q) { users.push_back(q.text(0)); });
  if (ec)
    return ec;
  out.users = users.size();
  for (const std::string& user : users) {
    if ((ec = check_user(db, user, out)))
      return ec;
  }

  Usage total;
  if ((ec = usage_of(db, std::nullopt, total)))
    return ec;
  if (total.garbage_shares > 0) {
    out.notes.push_back(std::to_string(total.garbage_shares) + " unreferenced shares (" +
                        std::to_string(total.garbage_bytes) +
                        " bytes) await compaction once their grace period ends");
  }
  // Listed after the snapshot began: a pack made since then has no rows in it, and is only noted.
  std::vector<std::pair<std::uint32_t, std::uint64_t>> packs;
  if (auto list_error = list_packs(dir, packs)) {
    out.problem("cannot list the packs: " + list_error.message());
    return {};
  }
  out.packs = packs.size();
  std::uint64_t idle = 0;
  std::uint64_t idle_bytes = 0;
  for (const auto& [number, size] : packs) {
    if (!packs_with_rows.count(number)) {
      ++idle;
      idle_bytes += size;
    }
  }
  if (idle > 0) {
    out.notes.push_back(std::to_string(idle) + " pack files (" + std::to_string(idle_bytes) +
                        " bytes) hold no indexed record: left by an interrupted write or "
                        "compaction, or being written now; compaction removes them");
  }
  return {};
}

std::optional<MaintenanceLock> MaintenanceLock::acquire(const fs::path& dir, bool exclusive,
                                                        std::chrono::milliseconds wait) {
  pack::Fd fd;
  if (pack::open_file(dir / kMaintenanceFile, O_RDWR | O_CREAT, 0600, fd))
    return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    if (::flock(fd.get(), (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0)
      return MaintenanceLock(std::move(fd));
    if ((errno != EWOULDBLOCK && errno != EINTR) || std::chrono::steady_clock::now() >= deadline)
      return std::nullopt;
    std::this_thread::sleep_for(kLockPoll);
  }
}

}  // namespace detail

}  // namespace splitfs::store
