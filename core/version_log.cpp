#include "core/version_log.hpp"

#include <sqlite3.h>

#include <splitfs/errors.hpp>

namespace splitfs::core {

namespace {

struct Finalize {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Statement = std::unique_ptr<sqlite3_stmt, Finalize>;

}  // namespace

void VersionLog::Close::operator()(sqlite3* db) const {
  sqlite3_close(db);
}

VersionLog::VersionLog(const std::filesystem::path& file) {
  sqlite3* raw = nullptr;
  const int rc =
      sqlite3_open_v2(file.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  db_.reset(raw);
  // Before anything touches the file: two clients opening a new home at once must wait, not fail.
  if (raw != nullptr)
    sqlite3_busy_timeout(raw, 10000);
  if (rc != SQLITE_OK ||
      sqlite3_exec(
          db_.get(),
          "PRAGMA journal_mode=WAL;"
          "PRAGMA synchronous=NORMAL;"
          "CREATE TABLE IF NOT EXISTS seen(file BLOB PRIMARY KEY, version INTEGER NOT NULL)",
          nullptr, nullptr, nullptr) != SQLITE_OK) {
    throw LocalIoError("cannot open the client state database " + file.string());
  }
}

VersionLog::~VersionLog() = default;

std::uint64_t VersionLog::seen(const Id& file) {
  sqlite3_stmt* raw = nullptr;
  sqlite3_prepare_v2(db_.get(), "SELECT version FROM seen WHERE file = ?", -1, &raw, nullptr);
  Statement stmt(raw);
  if (!stmt || sqlite3_bind_blob(raw, 1, file.data(), file.size(), SQLITE_STATIC) != SQLITE_OK) {
    throw LocalIoError("client state database failed");
  }
  const int rc = sqlite3_step(raw);
  if (rc == SQLITE_ROW)
    return static_cast<std::uint64_t>(sqlite3_column_int64(raw, 0));
  if (rc != SQLITE_DONE)
    throw LocalIoError("client state database failed");
  return 0;
}

void VersionLog::raise(const Id& file, std::uint64_t version) {
  sqlite3_stmt* raw = nullptr;
  sqlite3_prepare_v2(db_.get(),
                     "INSERT INTO seen(file, version) VALUES(?1, ?2) ON CONFLICT(file) DO UPDATE "
                     "SET version = max(version, excluded.version)",
                     -1, &raw, nullptr);
  Statement stmt(raw);
  if (!stmt || sqlite3_bind_blob(raw, 1, file.data(), file.size(), SQLITE_STATIC) != SQLITE_OK ||
      sqlite3_bind_int64(raw, 2, static_cast<sqlite3_int64>(version)) != SQLITE_OK ||
      sqlite3_step(raw) != SQLITE_DONE) {
    throw LocalIoError("client state database failed");
  }
}

}  // namespace splitfs::core
