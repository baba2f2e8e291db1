// The highest manifest version this client has seen for each file, kept in the client home
// (state.sqlite). A server that serves an older, once-valid manifest (a rollback) is caught by
// comparing against it. Safe for several processes of one user at once (SQLite locking).
//
// Records are written without a sync each (WAL, synchronous=NORMAL): they survive the process
// ending at any point, and reach the disk at the next checkpoint. A crash of the machine (or a
// power loss) can forget the versions recorded shortly before it, which only weakens rollback
// detection for those few files until they are seen again; everything older stays protected.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <utility>

#include "common/bytes.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace splitfs::core {

class VersionLog {
 public:
  // Throws splitfs::LocalIoError if the database cannot be opened.
  explicit VersionLog(const std::filesystem::path& file);
  ~VersionLog();
  VersionLog(const VersionLog&) = delete;
  VersionLog& operator=(const VersionLog&) = delete;

  // 0 when the file was never seen.
  std::uint64_t seen(const Id& file);
  // Records `version` unless a higher one is already recorded.
  void raise(const Id& file, std::uint64_t version);
  // raise() for each (file, version), in one transaction.
  void raise_all(std::span<const std::pair<Id, std::uint64_t>> versions);

 private:
  struct Close {
    void operator()(sqlite3* db) const;
  };
  struct Finalize {
    void operator()(sqlite3_stmt* stmt) const;
  };
  using Statement = std::unique_ptr<sqlite3_stmt, Finalize>;

  std::unique_ptr<sqlite3, Close> db_;
  // Prepared once: parsing them at each call cost more than running them.
  Statement select_;
  Statement upsert_;
};

}  // namespace splitfs::core
