#include "store/pg.hpp"

#include <cstdlib>

namespace splitfs::store::pg {

namespace {

std::string quoted_hex(ByteView value) {
  // An element of an array literal: "\\x<hex>" (the backslash escaped for the array parser).
  return "\"\\\\x" + to_hex(value) + "\"";
}

}  // namespace

Params& Params::text(std::string value) {
  storage_.push_back(std::move(value));
  values_.push_back(storage_.back().c_str());
  lengths_.push_back(0);
  formats_.push_back(0);
  return *this;
}

Params& Params::bytes(ByteView value) {
  static const char kEmpty = 0;
  values_.push_back(value.empty() ? &kEmpty : reinterpret_cast<const char*>(value.data()));
  lengths_.push_back(static_cast<int>(value.size()));
  formats_.push_back(1);
  return *this;
}

Params& Params::id_array(std::span<const Id> ids) {
  std::string literal = "{";
  literal.reserve(2 + ids.size() * 70);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0)
      literal.push_back(',');
    literal += quoted_hex(ByteView(ids[i].data(), ids[i].size()));
  }
  literal.push_back('}');
  return text(std::move(literal));
}

Params& Params::bytes_array(std::span<const ByteView> values) {
  std::string literal = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0)
      literal.push_back(',');
    literal += quoted_hex(values[i]);
  }
  literal.push_back('}');
  return text(std::move(literal));
}

Params& Params::int64_array(std::span<const std::int64_t> values) {
  std::string literal = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0)
      literal.push_back(',');
    literal += std::to_string(values[i]);
  }
  literal.push_back('}');
  return text(std::move(literal));
}

Result exec(PGconn* conn, std::string_view sql, const Params& params) {
  const std::string statement(sql);
  return Result(PQexecParams(conn, statement.c_str(), params.size(), nullptr, params.values(),
                             params.lengths(), params.formats(), 1));
}

bool ok(const Result& result) {
  if (!result)
    return false;
  const ExecStatusType status = PQresultStatus(result.get());
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

std::string sqlstate(const Result& result) {
  if (!result)
    return {};
  const char* state = PQresultErrorField(result.get(), PG_DIAG_SQLSTATE);
  return state ? state : "";
}

std::string error_text(PGconn* conn, const Result& result) {
  std::string text = result ? PQresultErrorMessage(result.get()) : "";
  if (text.empty() && conn)
    text = PQerrorMessage(conn);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
    text.pop_back();
  return text;
}

std::int64_t affected(const Result& result) {
  const char* count = result ? PQcmdTuples(result.get()) : "";
  return count && *count ? std::strtoll(count, nullptr, 10) : 0;
}

int rows(const Result& result) {
  return result ? PQntuples(result.get()) : 0;
}

std::int64_t int64(const Result& result, int row, int column) {
  if (PQgetisnull(result.get(), row, column) || PQgetlength(result.get(), row, column) != 8)
    return 0;
  const auto* p = reinterpret_cast<const std::uint8_t*>(PQgetvalue(result.get(), row, column));
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value = value << 8 | p[i];
  return static_cast<std::int64_t>(value);
}

ByteView bytes(const Result& result, int row, int column) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(PQgetvalue(result.get(), row, column));
  return {p, static_cast<std::size_t>(PQgetlength(result.get(), row, column))};
}

std::string text(const Result& result, int row, int column) {
  return {PQgetvalue(result.get(), row, column),
          static_cast<std::size_t>(PQgetlength(result.get(), row, column))};
}

bool boolean(const Result& result, int row, int column) {
  return PQgetlength(result.get(), row, column) == 1 && *PQgetvalue(result.get(), row, column) != 0;
}

}  // namespace splitfs::store::pg
