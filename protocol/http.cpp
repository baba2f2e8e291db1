// HTTP mapping of the protocol: the route table in codec.hpp, in both directions.
#include <string>
#include <variant>

#include "protocol/codec.hpp"

namespace splitfs::protocol {

namespace {

constexpr std::string_view kGet = "GET";
constexpr std::string_view kPost = "POST";
constexpr std::string_view kPut = "PUT";
constexpr std::string_view kDelete = "DELETE";

constexpr std::string_view kPrefix = "/v1/";
constexpr std::string_view kFilesPrefix = "/v1/files/";

std::string file_target(const Id& file, std::string_view suffix = {}) {
  std::string target(kFilesPrefix);
  target += to_hex(file);
  target += suffix;
  return target;
}

// A route whose fields all come from the body (or that has none).
std::error_code decode_body_route(std::string_view method, std::string_view want, Op op,
                                  ByteView body, Request& out) {
  if (method != want)
    return DecodeErrc::unknown_op;
  return decode_request(op, body, out);
}

// /v1/files/<hex>[/info]: the id comes from the target; only a commit carries a body.
std::error_code decode_file_route(std::string_view method, std::string_view rest, ByteView body,
                                  Request& out) {
  const std::size_t slash = rest.find('/');
  const std::string_view hex = rest.substr(0, slash);
  Op op{};
  if (slash == std::string_view::npos) {
    if (method == kGet) {
      op = Op::get_file;
    } else if (method == kDelete) {
      op = Op::remove_file;
    } else if (method == kPut) {
      op = Op::commit;
    } else {
      return DecodeErrc::unknown_op;
    }
  } else if (rest.substr(slash + 1) == "info" && method == kGet) {
    op = Op::file_info;
  } else {
    return DecodeErrc::unknown_op;
  }

  const std::optional<Id> file = id_from_hex(hex);
  if (!file)
    return DecodeErrc::invalid_value;

  switch (op) {
    case Op::commit: {
      Request request;
      if (auto ec = decode_request(Op::commit, body, request))
        return ec;
      if (std::get<Commit>(request).file != *file)
        return DecodeErrc::invalid_value;
      out = std::move(request);
      return {};
    }
    case Op::get_file:
    case Op::remove_file:
    case Op::file_info:
      if (!body.empty())
        return DecodeErrc::trailing_bytes;
      if (op == Op::get_file) {
        out = GetFile{*file};
      } else if (op == Op::remove_file) {
        out = RemoveFile{*file};
      } else {
        out = GetFileInfo{*file};
      }
      return {};
    default:
      return DecodeErrc::unknown_op;
  }
}

struct Route {
  std::string_view method;
  std::string target;
  bool has_body = false;
};

Route route_of(const Request& request) {
  struct Visitor {
    Route operator()(const Hello&) const { return {kGet, "/v1/hello", true}; }
    Route operator()(const HasShares&) const { return {kPost, "/v1/shares/has", true}; }
    Route operator()(const PutShares&) const { return {kPost, "/v1/shares", true}; }
    Route operator()(const GetShares&) const { return {kPost, "/v1/shares/get", true}; }
    Route operator()(const Commit& m) const { return {kPut, file_target(m.file), true}; }
    Route operator()(const GetFile& m) const { return {kGet, file_target(m.file)}; }
    Route operator()(const ListFiles&) const { return {kGet, "/v1/files"}; }
    Route operator()(const RemoveFile& m) const { return {kDelete, file_target(m.file)}; }
    Route operator()(const GetFileInfo& m) const { return {kGet, file_target(m.file, "/info")}; }
    Route operator()(const GetStats&) const { return {kGet, "/v1/stats"}; }
    Route operator()(const CommitBatch&) const { return {kPost, "/v1/commits", true}; }
  };
  return std::visit(Visitor{}, request);
}

}  // namespace

HttpRequest to_http(const Request& request) {
  Route route = route_of(request);
  HttpRequest http{route.method, std::move(route.target), {}};
  if (route.has_body)
    http.body = encode_request(request);
  return http;
}

GatheredHttpRequest gather_http(const Request& request) {
  Route route = route_of(request);
  GatheredHttpRequest http{route.method, std::move(route.target), std::nullopt};
  if (route.has_body)
    http.body = gather_request(request);
  return http;
}

std::error_code decode_http_request(std::string_view method, std::string_view target, ByteView body,
                                    Request& out) {
  if (target.starts_with(kFilesPrefix)) {
    return decode_file_route(method, target.substr(kFilesPrefix.size()), body, out);
  }
  if (!target.starts_with(kPrefix))
    return DecodeErrc::unknown_op;
  const std::string_view path = target.substr(kPrefix.size());
  if (path == "hello")
    return decode_body_route(method, kGet, Op::hello, body, out);
  if (path == "shares")
    return decode_body_route(method, kPost, Op::put_shares, body, out);
  if (path == "shares/has")
    return decode_body_route(method, kPost, Op::has_shares, body, out);
  if (path == "shares/get")
    return decode_body_route(method, kPost, Op::get_shares, body, out);
  if (path == "files")
    return decode_body_route(method, kGet, Op::list_files, body, out);
  if (path == "stats")
    return decode_body_route(method, kGet, Op::stats, body, out);
  if (path == "commits")
    return decode_body_route(method, kPost, Op::commit_batch, body, out);
  return DecodeErrc::unknown_op;
}

unsigned http_status(Status status) {
  switch (status) {
    case Status::ok:
      return 200;
    case Status::bad_request:
      return 400;
    case Status::not_found:
      return 404;
    case Status::conflict:
      return 409;
    case Status::missing_shares:
      return 422;
    case Status::too_large:
      return 413;
    case Status::corrupt:
      return 500;
    case Status::unsupported:
      return 501;
    case Status::internal:
      return 500;
    case Status::unauthorized:
      return 403;
    case Status::quota_exceeded:
      return 507;
    case Status::busy:
      return 503;
  }
  return 500;
}

std::error_code decode_http_reply(Op op, unsigned status, ByteView body, Reply& out) {
  if (status == 200)
    return decode_reply(op, body, out);
  ErrorReply error;
  if (auto ec = decode_error(body, error))
    return ec;
  if (http_status(error.status) != status)
    return DecodeErrc::invalid_value;
  out = std::move(error);
  return {};
}

}  // namespace splitfs::protocol
