// A small client for S3-compatible object stores (Ceph RGW, OpenStack Swift's s3api, MinIO, AWS
// S3), on libcurl: path-style requests signed with SigV4 by curl (CURLOPT_AWS_SIGV4), the access
// key and secret passed to curl apart (tempauth's access keys contain a colon), and
// x-amz-content-sha256 sent once per request (UNSIGNED-PAYLOAD over HTTPS, where TLS protects the
// bytes; the payload's SHA-256 over plain HTTP).
//
// Guarantees: TLS peer and host verification are always on (a CA file may be named for a private
// CA); every request has a connect timeout, a stall timeout and a total deadline that grows with
// its size; connection failures, timeouts and 5xx answers are retried a bounded number of times
// with exponential backoff (every request here is idempotent: a PUT of the same key and bytes, a
// ranged GET, a DELETE). Secrets are never logged. put_object returns only once the store has
// answered success, i.e. the object is durable by the store's own guarantee. Objects above
// Options::multipart_threshold go up as a multipart upload, aborted again on failure. Every method
// is safe to call from several threads at once; connections are pooled and reused.
//
// The parsing helpers (parse_location, parse_credentials, uri_encode, xml_values) do no I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::objectstore {

enum class Errc {
  not_found = 1,  // no such object (or bucket)
  denied,         // the credentials were refused (403) or the signature did not match
  unavailable,    // the store could not be reached, timed out or kept failing (5xx)
  failed,         // any other refusal (4xx) or an answer we could not understand
  too_large,      // an object or range above this client's bounds
};
const std::error_category& objectstore_category();
std::error_code make_error_code(Errc e);

// Where a bucket lives: s3://BUCKET?endpoint=https://HOST:PORT&region=REGION&ca=CA_FILE
// (region defaults to us-east-1; ca to the system's CAs; prefix=P puts every key under P/).
struct Location {
  std::string bucket;
  std::string endpoint;  // scheme://host[:port], no trailing slash
  std::string region = "us-east-1";
  std::string ca_file;
  std::string prefix;  // "" or ends with '/'
  bool https() const { return endpoint.rfind("https://", 0) == 0; }
};
// nullopt with `error` saying why for anything malformed (unknown parameters included).
std::optional<Location> parse_location(std::string_view url, std::string& error);

struct Credentials {
  std::string access_key;
  std::string secret_key;
};
// A credentials file: either "access_key = ..." / "secret_key = ..." lines, or the AWS shared
// file's "aws_access_key_id = ..." / "aws_secret_access_key = ..." (the first profile that has
// both). '#' and ';' start comments. nullopt with `error` (never quoting a secret) otherwise.
std::optional<Credentials> parse_credentials(std::string_view text, std::string& error);
// From `file` when not empty (it must not be readable by group or others), else from
// $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, else from the file $AWS_SHARED_CREDENTIALS_FILE
// names. Throws std::runtime_error saying what is missing.
Credentials load_credentials(const std::filesystem::path& file);

// RFC 3986 percent-encoding of everything but unreserved characters ('/' kept when `keep_slash`).
std::string uri_encode(std::string_view text, bool keep_slash);
// The text of every <tag>...</tag> element in `xml`, in order, with the five XML entities decoded.
std::vector<std::string> xml_values(std::string_view xml, std::string_view tag);

struct Options {
  std::chrono::milliseconds connect_timeout{5000};
  // A transfer that moves fewer than 16 KiB/s for this long is abandoned (and retried).
  std::chrono::seconds stall_timeout{20};
  // Total deadline of one attempt: this plus one second per MiB of the request or answer.
  std::chrono::seconds request_timeout{30};
  int attempts = 4;  // tries per request, the first included
  std::chrono::milliseconds first_backoff{100};
  // Objects larger than this go up in parts of part_bytes (S3 allows at most 10000 parts).
  std::uint64_t multipart_threshold = 64u << 20;
  std::uint64_t part_bytes = 16u << 20;
  // Largest object get_object reads, and largest range get_range reads.
  std::uint64_t max_read_bytes = 256u << 20;
};

struct ObjectInfo {
  std::string key;  // without the location's prefix
  std::uint64_t size = 0;
};

class Client {
 public:
  Client(Location location, Credentials credentials, Options options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Location& location() const { return location_; }

  // Creates the bucket; success if it exists already and is ours.
  std::error_code create_bucket();
  // Stores the concatenation of `parts` under `key`, replacing any object there.
  std::error_code put_object(std::string_view key, std::span<const ByteView> parts);
  // Reads `length` bytes at `offset`; not_found for a missing object, failed if fewer came back.
  std::error_code get_range(std::string_view key, std::uint64_t offset, std::size_t length,
                            Bytes& out);
  // Reads a whole object (up to Options::max_read_bytes).
  std::error_code get_object(std::string_view key, Bytes& out);
  // Removes `key`; success if it was absent already.
  std::error_code delete_object(std::string_view key);
  // Every object whose key starts with `prefix` (after the location's prefix), in key order.
  std::error_code list(std::string_view prefix, std::vector<ObjectInfo>& out);

  struct Request;
  struct Handle;

 private:
  std::error_code perform(Request& request);
  std::error_code put_multipart(const std::string& key, std::span<const ByteView> parts,
                                std::uint64_t total);

  Location location_;
  Credentials credentials_;
  Options options_;
  struct Pool;
  std::unique_ptr<Pool> pool_;
};

}  // namespace splitfs::objectstore

template <>
struct std::is_error_code_enum<splitfs::objectstore::Errc> : std::true_type {};
