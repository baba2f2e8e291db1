#include "store/sqlite.hpp"

namespace splitfs::store::sql {

namespace {
// Bounds how long a statement waits for a lock held by another connection of this process (WAL
// checkpoints, the writer's commit) before failing with SQLITE_BUSY.
constexpr int kBusyTimeoutMs = 10000;
}  // namespace

int open(const std::string& path, int flags, Db& db, std::string& error) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  Db owned(raw);
  if (rc != SQLITE_OK) {
    error = owned ? sqlite3_errmsg(owned.get()) : sqlite3_errstr(rc);
    return rc;
  }
  sqlite3_extended_result_codes(owned.get(), 1);
  rc = sqlite3_busy_timeout(owned.get(), kBusyTimeoutMs);
  if (rc != SQLITE_OK) {
    error = sqlite3_errmsg(owned.get());
    return rc;
  }
  db = std::move(owned);
  return SQLITE_OK;
}

int exec(sqlite3* db, const char* sql) {
  return sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
}

int prepare(sqlite3* db, std::string_view sql, Stmt& out) {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
  out.reset(raw);
  return rc;
}

std::string last_error(sqlite3* db) {
  return db ? sqlite3_errmsg(db) : "no connection";
}

void Use::bind(int index, std::string_view text) {
  note(sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_STATIC, SQLITE_UTF8));
}

void Use::bind(int index, ByteView blob) {
  // A null pointer would bind SQL NULL; an empty blob must stay an empty blob.
  if (blob.empty()) {
    note(sqlite3_bind_zeroblob(stmt_, index, 0));
  } else {
    note(sqlite3_bind_blob64(stmt_, index, blob.data(), blob.size(), SQLITE_STATIC));
  }
}

void Use::bind(int index, std::int64_t value) {
  note(sqlite3_bind_int64(stmt_, index, value));
}

ByteView Use::blob(int column) const {
  const void* data = sqlite3_column_blob(stmt_, column);
  int size = sqlite3_column_bytes(stmt_, column);
  if (data == nullptr || size <= 0)
    return {};
  return {static_cast<const std::uint8_t*>(data), static_cast<std::size_t>(size)};
}

std::string Use::text(int column) const {
  const unsigned char* data = sqlite3_column_text(stmt_, column);
  return data ? std::string(reinterpret_cast<const char*>(data),
                            static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
              : std::string();
}

int run(const Stmt& stmt) {
  Use use(stmt);
  return use.step();
}

}  // namespace splitfs::store::sql
