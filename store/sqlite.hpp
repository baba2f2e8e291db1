// A thin RAII layer over the SQLite C API for the store's index: owned connections, prepared
// statements that reset themselves after each use, and transactions that roll back unless
// committed. Functions return SQLite result codes; callers decide what they mean.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/bytes.hpp"

namespace splitfs::store::sql {

struct DbClose {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbClose>;

struct StmtFinalize {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtFinalize>;

// Opens `path` with `flags` (SQLITE_OPEN_*), sets a bounded busy timeout. On failure `db` is empty
// and `error` says why (no SQL).
int open(const std::string& path, int flags, Db& db, std::string& error);
// Runs one or more statements that return no rows.
int exec(sqlite3* db, const char* sql);
// Prepares one long-lived statement.
int prepare(sqlite3* db, std::string_view sql, Stmt& out);
std::string last_error(sqlite3* db);

// One use of a prepared statement: resets it and clears its bindings when it goes out of scope, so
// no statement keeps a read transaction open between uses.
class Use {
 public:
  explicit Use(const Stmt& stmt) : stmt_(stmt.get()) {}
  ~Use() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;

  // Bound views must stay alive until the Use ends. A failed bind makes step() return its code.
  void bind(int index, std::string_view text);
  void bind(int index, ByteView blob);
  void bind(int index, std::int64_t value);
  int step() { return bind_rc_ != SQLITE_OK ? bind_rc_ : sqlite3_step(stmt_); }

  std::int64_t int64(int column) const { return sqlite3_column_int64(stmt_, column); }
  ByteView blob(int column) const;
  std::string text(int column) const;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  void note(int rc) {
    if (bind_rc_ == SQLITE_OK)
      bind_rc_ = rc;
  }

  sqlite3_stmt* stmt_;
  int bind_rc_ = SQLITE_OK;
};

// Runs a statement that returns no rows (BEGIN, COMMIT, an INSERT...) to completion.
int run(const Stmt& stmt);

// A transaction on prepared BEGIN/COMMIT/ROLLBACK statements: rolls back on destruction unless
// commit() succeeded.
class Transaction {
 public:
  Transaction(const Stmt& begin, const Stmt& commit, const Stmt& rollback)
      : commit_(commit), rollback_(rollback), rc_(run(begin)) {}
  ~Transaction() {
    if (rc_ == SQLITE_DONE && !done_)
      run(rollback_);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  // SQLITE_DONE when the transaction began.
  int begin_rc() const { return rc_; }
  int commit() {
    int rc = run(commit_);
    if (rc == SQLITE_DONE)
      done_ = true;
    return rc;
  }
  // Rolls back now rather than at destruction.
  void rollback() {
    if (rc_ == SQLITE_DONE && !done_)
      run(rollback_);
    done_ = true;
  }

 private:
  const Stmt& commit_;
  const Stmt& rollback_;
  int rc_;
  bool done_ = false;
};

}  // namespace splitfs::store::sql
