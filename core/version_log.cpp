#include "core/version_log.hpp"

#include <sqlite3.h>

#include <splitfs/errors.hpp>

namespace splitfs::core {

void VersionLog::Close::operator()(sqlite3* db) const {
  sqlite3_close(db);
}

void VersionLog::Finalize::operator()(sqlite3_stmt* stmt) const {
  sqlite3_finalize(stmt);
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
  sqlite3_stmt* select = nullptr;
  sqlite3_stmt* upsert = nullptr;
  sqlite3_prepare_v2(db_.get(), "SELECT version FROM seen WHERE file = ?", -1, &select, nullptr);
  select_.reset(select);
  sqlite3_prepare_v2(db_.get(),
                     "INSERT INTO seen(file, version) VALUES(?1, ?2) ON CONFLICT(file) DO UPDATE "
                     "SET version = max(version, excluded.version)",
                     -1, &upsert, nullptr);
  upsert_.reset(upsert);
  if (!select_ || !upsert_)
    throw LocalIoError("cannot open the client state database " + file.string());
}

VersionLog::~VersionLog() = default;

std::uint64_t VersionLog::seen(const Id& file) {
  sqlite3_stmt* stmt = select_.get();
  sqlite3_reset(stmt);
  if (sqlite3_bind_blob(stmt, 1, file.data(), static_cast<int>(file.size()), SQLITE_STATIC) !=
      SQLITE_OK)
    throw LocalIoError("client state database failed");
  const int rc = sqlite3_step(stmt);
  std::uint64_t version = 0;
  if (rc == SQLITE_ROW)
    version = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  sqlite3_reset(stmt);  // ends the read
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    throw LocalIoError("client state database failed");
  return version;
}

void VersionLog::raise(const Id& file, std::uint64_t version) {
  sqlite3_stmt* stmt = upsert_.get();
  sqlite3_reset(stmt);
  const bool ok = sqlite3_bind_blob(stmt, 1, file.data(), static_cast<int>(file.size()),
                                    SQLITE_STATIC) == SQLITE_OK &&
                  sqlite3_bind_int64(stmt, 2, static_cast<sqlite3_int64>(version)) == SQLITE_OK &&
                  sqlite3_step(stmt) == SQLITE_DONE;
  sqlite3_reset(stmt);
  if (!ok)
    throw LocalIoError("client state database failed");
}

void VersionLog::raise_all(std::span<const std::pair<Id, std::uint64_t>> versions) {
  if (versions.empty())
    return;
  if (sqlite3_exec(db_.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
    throw LocalIoError("client state database failed");
  try {
    for (const auto& [file, version] : versions)
      raise(file, version);
  } catch (...) {
    sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  if (sqlite3_exec(db_.get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw LocalIoError("client state database failed");
  }
}

}  // namespace splitfs::core
