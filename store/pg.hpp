// A thin RAII layer over libpq for the shared store's index: owned connections and results,
// parameters in text (numbers, arrays) or binary (bytea) form, and results always in binary form,
// read with checked accessors (every integer column is cast to bigint in the SQL).
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::store::pg {

struct ConnFinish {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using Conn = std::unique_ptr<PGconn, ConnFinish>;

struct ResultClear {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultClear>;

class Params {
 public:
  Params& text(std::string value);
  Params& int64(std::int64_t value) { return text(std::to_string(value)); }
  Params& bytes(ByteView value);  // bytea, sent in binary; the view must outlive the call
  // bytea[] / bigint[] as array literals.
  Params& id_array(std::span<const Id> ids);
  Params& bytes_array(std::span<const ByteView> values);
  Params& int64_array(std::span<const std::int64_t> values);

  int size() const { return static_cast<int>(values_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  std::deque<std::string> storage_;  // stable addresses for text values
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

// Runs `sql` with `params`; results in binary form.
Result exec(PGconn* conn, std::string_view sql, const Params& params = {});
// True for PGRES_COMMAND_OK and PGRES_TUPLES_OK.
bool ok(const Result& result);
// The SQLSTATE of a failed result ("" when none), e.g. "40001" or "40P01".
std::string sqlstate(const Result& result);
// The error text of a failed result or connection, for the log (never holds a password).
std::string error_text(PGconn* conn, const Result& result);
// Rows changed by an INSERT, UPDATE or DELETE.
std::int64_t affected(const Result& result);

int rows(const Result& result);
// bigint (int8) column; 0 for NULL. Any other width is a programming error caught by the caller's
// own range checks: it reads as 0.
std::int64_t int64(const Result& result, int row, int column);
ByteView bytes(const Result& result, int row, int column);
std::string text(const Result& result, int row, int column);
bool boolean(const Result& result, int row, int column);

}  // namespace splitfs::store::pg
