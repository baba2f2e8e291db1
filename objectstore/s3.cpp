#include "objectstore/s3.hpp"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/pieces.hpp"

namespace splitfs::objectstore {

namespace {

// Connections kept open for the next requests.
constexpr std::size_t kMaxIdleHandles = 32;
// A failed answer's body is read for its error code up to this size.
constexpr std::size_t kMaxErrorBody = 64u << 10;
// List and multipart answers are small XML documents.
constexpr std::size_t kMaxXmlBody = 8u << 20;
constexpr long kLowSpeedBytes = 16L << 10;
constexpr int kMaxParts = 10000;
constexpr const char* kUnsignedPayload = "UNSIGNED-PAYLOAD";

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "splitfs.objectstore"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::not_found:
        return "no such object";
      case Errc::denied:
        return "the object store refused the credentials";
      case Errc::unavailable:
        return "the object store is unavailable";
      case Errc::failed:
        return "the object store refused the request";
      case Errc::too_large:
        return "object too large";
    }
    return "unknown object store error";
  }
};

void log_failure(std::string_view what) {
  std::fprintf(stderr, "splitfs objectstore: %.*s\n", static_cast<int>(what.size()), what.data());
}

// curl_global_init must run once before the first handle exists.
void global_init() {
  static const CURLcode code = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (code != CURLE_OK)
    throw std::runtime_error("cannot initialise libcurl");
}

struct CurlFree {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlPtr = std::unique_ptr<CURL, CurlFree>;
struct SlistFree {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistFree>;

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos)
    return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return std::string(text.substr(first, last - first + 1));
}

std::string decode_entities(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  static const std::pair<std::string_view, char> kEntities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  for (std::size_t i = 0; i < text.size();) {
    bool replaced = false;
    if (text[i] == '&') {
      for (const auto& [entity, c] : kEntities) {
        if (text.substr(i, entity.size()) == entity) {
          out.push_back(c);
          i += entity.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced)
      out.push_back(text[i++]);
  }
  return out;
}

std::string hex(const unsigned char* data, std::size_t n) {
  static const char* const digits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

struct MdFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

std::string sha256_hex(std::span<const ByteView> parts) {
  std::unique_ptr<EVP_MD_CTX, MdFree> ctx(EVP_MD_CTX_new());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 unavailable");
  for (const ByteView part : parts) {
    if (EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1)
      throw std::runtime_error("SHA-256 failed");
  }
  if (EVP_DigestFinal_ex(ctx.get(), digest, &length) != 1)
    throw std::runtime_error("SHA-256 failed");
  return hex(digest, length);
}

bool valid_bucket(std::string_view name) {
  if (name.size() < 3 || name.size() > 63)
    return false;
  for (const char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
      return false;
  }
  return name.front() != '-' && name.front() != '.' && name.back() != '-' && name.back() != '.';
}

bool valid_endpoint(std::string_view endpoint) {
  std::string_view rest;
  if (endpoint.rfind("https://", 0) == 0)
    rest = endpoint.substr(8);
  else if (endpoint.rfind("http://", 0) == 0)
    rest = endpoint.substr(7);
  else
    return false;
  if (rest.empty() || rest.size() > 255)
    return false;
  for (const char c : rest) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '.' || c == ':' || c == '[' || c == ']'))
      return false;
  }
  return true;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size())
      return std::nullopt;
    auto value = from_hex(text.substr(i + 1, 2));
    if (!value || value->size() != 1)
      return std::nullopt;
    out.push_back(static_cast<char>((*value)[0]));
    i += 2;
  }
  return out;
}

}  // namespace

const std::error_category& objectstore_category() {
  static const Category category;
  return category;
}

std::error_code make_error_code(Errc e) {
  return {static_cast<int>(e), objectstore_category()};
}

std::optional<Location> parse_location(std::string_view url, std::string& error) {
  constexpr std::string_view kScheme = "s3://";
  if (url.rfind(kScheme, 0) != 0) {
    error = "an S3 backend is written s3://BUCKET?endpoint=https://HOST:PORT";
    return std::nullopt;
  }
  url.remove_prefix(kScheme.size());
  const auto query_at = url.find('?');
  Location location;
  location.bucket = std::string(url.substr(0, query_at));
  if (!valid_bucket(location.bucket)) {
    error = "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'";
    return std::nullopt;
  }
  std::string_view query = query_at == std::string_view::npos ? "" : url.substr(query_at + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) {
      error = "S3 backend parameters are NAME=VALUE";
      return std::nullopt;
    }
    const std::string_view name = pair.substr(0, eq);
    const std::optional<std::string> value = percent_decode(pair.substr(eq + 1));
    if (!value || value->empty()) {
      error = "S3 backend parameter " + std::string(name) + " has no valid value";
      return std::nullopt;
    }
    if (name == "endpoint") {
      std::string endpoint = *value;
      while (!endpoint.empty() && endpoint.back() == '/')
        endpoint.pop_back();
      if (!valid_endpoint(endpoint)) {
        error = "the S3 endpoint must be http(s)://HOST[:PORT]";
        return std::nullopt;
      }
      location.endpoint = endpoint;
    } else if (name == "region") {
      if (value->size() > 64 ||
          value->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-") != std::string::npos) {
        error = "the S3 region must be lowercase letters, digits and '-'";
        return std::nullopt;
      }
      location.region = *value;
    } else if (name == "ca") {
      location.ca_file = *value;
    } else if (name == "prefix") {
      if (value->size() > 200 || value->find("..") != std::string::npos || value->front() == '/' ||
          value->find_first_not_of(
              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./") !=
              std::string::npos) {
        error = "the S3 key prefix must be letters, digits, '-', '_', '.' and '/'";
        return std::nullopt;
      }
      location.prefix = *value;
      if (location.prefix.back() != '/')
        location.prefix.push_back('/');
    } else {
      error = "unknown S3 backend parameter " + std::string(name) +
              " (known: endpoint, region, ca, prefix)";
      return std::nullopt;
    }
  }
  if (location.endpoint.empty()) {
    error = "the S3 backend needs endpoint=https://HOST:PORT";
    return std::nullopt;
  }
  return location;
}

std::optional<Credentials> parse_credentials(std::string_view text, std::string& error) {
  Credentials plain;
  Credentials aws;
  std::optional<Credentials> first_aws;
  std::istringstream in{std::string(text)};
  std::string line;
  int number = 0;
  auto finish_profile = [&] {
    if (!first_aws && !aws.access_key.empty() && !aws.secret_key.empty())
      first_aws = aws;
    aws = {};
  };
  while (std::getline(in, line)) {
    ++number;
    const std::string trimmed = trim(line);
    if (trimmed.empty() || trimmed[0] == '#' || trimmed[0] == ';')
      continue;
    if (trimmed.front() == '[' && trimmed.back() == ']') {
      finish_profile();
      continue;
    }
    const auto eq = trimmed.find('=');
    if (eq == std::string::npos) {
      error = "line " + std::to_string(number) + " of the credentials is not NAME = VALUE";
      return std::nullopt;
    }
    const std::string name = trim(std::string_view(trimmed).substr(0, eq));
    const std::string value = trim(std::string_view(trimmed).substr(eq + 1));
    if (name == "access_key")
      plain.access_key = value;
    else if (name == "secret_key")
      plain.secret_key = value;
    else if (name == "aws_access_key_id")
      aws.access_key = value;
    else if (name == "aws_secret_access_key")
      aws.secret_key = value;
  }
  finish_profile();
  if (!plain.access_key.empty() && !plain.secret_key.empty())
    return plain;
  if (first_aws)
    return first_aws;
  error =
      "the credentials name no access key and secret key (access_key = ... and secret_key = "
      "..., or aws_access_key_id and aws_secret_access_key)";
  return std::nullopt;
}

Credentials load_credentials(const std::filesystem::path& file) {
  auto from_file = [](const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      throw std::runtime_error("cannot read the S3 credentials file " + path.string() + ": " +
                               std::generic_category().message(errno));
    if ((st.st_mode & 077) != 0)
      throw std::runtime_error("the S3 credentials file " + path.string() +
                               " must not be readable by others (chmod 600)");
    if (st.st_size > (64L << 10))
      throw std::runtime_error("the S3 credentials file " + path.string() + " is too large");
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    if (!in && !in.eof())
      throw std::runtime_error("cannot read the S3 credentials file " + path.string());
    std::string error;
    auto credentials = parse_credentials(text.str(), error);
    if (!credentials)
      throw std::runtime_error("S3 credentials file " + path.string() + ": " + error);
    return *credentials;
  };
  if (!file.empty())
    return from_file(file);
  const char* key = std::getenv("AWS_ACCESS_KEY_ID");
  const char* secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  if (key && secret && *key && *secret)
    return {key, secret};
  if (const char* shared = std::getenv("AWS_SHARED_CREDENTIALS_FILE"); shared && *shared)
    return from_file(shared);
  throw std::runtime_error(
      "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a credentials "
      "file");
}

std::string uri_encode(std::string_view text, bool keep_slash) {
  static const char* const digits = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(digits[u >> 4]);
      out.push_back(digits[u & 15]);
    }
  }
  return out;
}

std::vector<std::string> xml_values(std::string_view xml, std::string_view tag) {
  std::vector<std::string> values;
  const std::string open = "<" + std::string(tag) + ">";
  const std::string close = "</" + std::string(tag) + ">";
  std::size_t at = 0;
  while ((at = xml.find(open, at)) != std::string_view::npos) {
    const std::size_t start = at + open.size();
    const std::size_t end = xml.find(close, start);
    if (end == std::string_view::npos)
      break;
    values.push_back(decode_entities(xml.substr(start, end - start)));
    at = end + close.size();
  }
  return values;
}

// One request and what came back.
struct Client::Request {
  const char* method = "GET";
  std::string key;    // without the prefix; empty for a bucket request
  std::string query;  // canonical: sorted, encoded; without '?'
  std::span<const ByteView> body;
  std::uint64_t body_bytes = 0;
  std::string range;  // "first-last" for a ranged GET
  std::size_t max_answer = kMaxErrorBody;

  long status = 0;
  Bytes answer;
  std::string etag;
  bool answer_too_large = false;
  // Upload position, for curl's read and seek callbacks.
  PieceReader upload;
};

struct Client::Pool {
  std::mutex mutex;
  std::vector<CurlPtr> idle;
};

namespace {

std::size_t read_body(char* buffer, std::size_t size, std::size_t count, void* user) {
  return static_cast<Client::Request*>(user)->upload.read(reinterpret_cast<std::uint8_t*>(buffer),
                                                          size * count);
}

int seek_body(void* user, curl_off_t offset, int origin) {
  if (origin != SEEK_SET || offset < 0)
    return CURL_SEEKFUNC_CANTSEEK;
  auto& r = *static_cast<Client::Request*>(user);
  return r.upload.seek(static_cast<std::uint64_t>(offset)) ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_FAIL;
}

std::size_t write_answer(char* data, std::size_t size, std::size_t count, void* user) {
  auto& r = *static_cast<Client::Request*>(user);
  const std::size_t n = size * count;
  // An error's body may be longer than the answer expected; a body too long for a success is
  // caught by the caller.
  if (r.answer.size() + n > std::max(r.max_answer, kMaxErrorBody)) {
    r.answer_too_large = true;
    return 0;
  }
  r.answer.insert(r.answer.end(), reinterpret_cast<const std::uint8_t*>(data),
                  reinterpret_cast<const std::uint8_t*>(data) + n);
  return n;
}

std::size_t read_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& r = *static_cast<Client::Request*>(user);
  const std::size_t n = size * count;
  std::string_view line(data, n);
  if (line.size() > 5 && (line.substr(0, 5) == "ETag:" || line.substr(0, 5) == "etag:" ||
                          line.substr(0, 5) == "Etag:")) {
    r.etag = trim(line.substr(5));
  }
  return n;
}

bool transient(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

std::string error_code_of(const Bytes& answer) {
  const std::string_view text(reinterpret_cast<const char*>(answer.data()), answer.size());
  const auto codes = xml_values(text, "Code");
  return codes.empty() ? std::string() : codes.front();
}

}  // namespace

Client::Client(Location location, Credentials credentials, Options options)
    : location_(std::move(location)),
      credentials_(std::move(credentials)),
      options_(options),
      pool_(std::make_unique<Pool>()) {
  global_init();
  if (!location_.https())
    log_failure("the S3 endpoint " + location_.endpoint +
                " is plain HTTP: payloads are signed, but travel in clear");
}

Client::~Client() = default;

std::error_code Client::perform(Request& r) {
  std::string url = location_.endpoint + "/" + location_.bucket;
  if (!r.key.empty())
    url += "/" + uri_encode(location_.prefix + r.key, true);
  if (!r.query.empty())
    url += "?" + r.query;
  const std::string sigv4 = "aws:amz:" + location_.region + ":s3";
  const std::string payload = location_.https() ? kUnsignedPayload : sha256_hex(r.body);
  const std::string what = std::string(r.method) + " " + location_.bucket + "/" + r.key;

  // The deadline grows with what the request moves: its body, or the answer it may receive.
  const std::uint64_t moved = std::max<std::uint64_t>(r.body_bytes, r.max_answer);
  const auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
      options_.request_timeout + std::chrono::seconds(moved >> 20));
  auto backoff = options_.first_backoff;
  std::error_code result = Errc::unavailable;
  for (int attempt = 1; attempt <= std::max(1, options_.attempts); ++attempt) {
    if (attempt > 1) {
      std::this_thread::sleep_for(backoff);
      backoff *= 2;
    }
    CurlPtr curl;
    {
      std::lock_guard lock(pool_->mutex);
      if (!pool_->idle.empty()) {
        curl = std::move(pool_->idle.back());
        pool_->idle.pop_back();
      }
    }
    if (curl)
      curl_easy_reset(curl.get());
    else
      curl.reset(curl_easy_init());
    if (!curl) {
      log_failure("cannot create a curl handle");
      return Errc::unavailable;
    }
    r.status = 0;
    r.answer.clear();
    r.etag.clear();
    r.answer_too_large = false;
    r.upload = PieceReader(r.body);
    char error[CURL_ERROR_SIZE] = {};
    // Every header set here is signed by curl, so none may be one that curl then drops (such as an
    // empty "Expect:").
    Slist headers;
    auto add_header = [&](const std::string& line) {
      curl_slist* next = curl_slist_append(headers.get(), line.c_str());
      if (next) {
        static_cast<void>(headers.release());
        headers.reset(next);
      }
    };
    add_header("x-amz-content-sha256: " + payload);
    if (!r.range.empty())
      add_header("Range: bytes=" + r.range);

    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!location_.ca_file.empty())
      curl_easy_setopt(c, CURLOPT_CAINFO, location_.ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, credentials_.access_key.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, credentials_.secret_key.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options_.connect_timeout.count()));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(deadline.count()));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedBytes);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_timeout.count()));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_answer);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, read_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
    curl_easy_setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 512L * 1024);
    const std::string_view method = r.method;
    if (method == "PUT") {
      curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.body_bytes));
      curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
      curl_easy_setopt(c, CURLOPT_READDATA, &r);
      curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_body);
      curl_easy_setopt(c, CURLOPT_SEEKDATA, &r);
    } else if (method == "POST") {
      curl_easy_setopt(c, CURLOPT_POST, 1L);
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body_bytes));
      curl_easy_setopt(c, CURLOPT_READFUNCTION, read_body);
      curl_easy_setopt(c, CURLOPT_READDATA, &r);
      curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, seek_body);
      curl_easy_setopt(c, CURLOPT_SEEKDATA, &r);
    } else if (method == "DELETE") {
      curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    } else if (method == "HEAD") {
      curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }

    const CURLcode code = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    const bool reusable = code == CURLE_OK;
    if (reusable) {
      std::lock_guard lock(pool_->mutex);
      if (pool_->idle.size() < kMaxIdleHandles)
        pool_->idle.push_back(std::move(curl));
    }
    if (code != CURLE_OK) {
      if (r.answer_too_large && r.status >= 200 && r.status < 300) {
        log_failure(what + ": answer larger than expected");
        return Errc::too_large;
      }
      const std::string detail = error[0] ? error : curl_easy_strerror(code);
      if (!transient(code)) {
        log_failure(std::string(what).append(": ").append(detail));
        return code == CURLE_PEER_FAILED_VERIFICATION ? Errc::denied : Errc::failed;
      }
      log_failure(std::string(what)
                      .append(": ")
                      .append(detail)
                      .append(" (attempt ")
                      .append(std::to_string(attempt))
                      .append(")"));
      result = Errc::unavailable;
      continue;
    }
    if (r.status >= 200 && r.status < 300)
      return {};
    const std::string s3_code = error_code_of(r.answer);
    if (r.status >= 500 || r.status == 429) {
      log_failure(std::string(what)
                      .append(": HTTP ")
                      .append(std::to_string(r.status))
                      .append(" ")
                      .append(s3_code)
                      .append(" (attempt ")
                      .append(std::to_string(attempt))
                      .append(")"));
      result = Errc::unavailable;
      continue;
    }
    if (r.status == 404)
      return Errc::not_found;
    log_failure(std::string(what)
                    .append(": HTTP ")
                    .append(std::to_string(r.status))
                    .append(" ")
                    .append(s3_code));
    return r.status == 403 ? Errc::denied : Errc::failed;
  }
  return result;
}

std::error_code Client::create_bucket() {
  Request head;
  head.method = "HEAD";
  const std::error_code found = perform(head);
  if (found != Errc::not_found)
    return found;
  Request r;
  r.method = "PUT";
  if (std::error_code ec = perform(r)) {
    // Another process created it meanwhile.
    const std::string code = error_code_of(r.answer);
    if (r.status == 409 && (code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists"))
      return perform(head);
    return ec;
  }
  return {};
}

std::error_code Client::put_object(std::string_view key, std::span<const ByteView> parts) {
  std::uint64_t total = 0;
  for (const ByteView part : parts)
    total += part.size();
  if (total > options_.multipart_threshold)
    return put_multipart(std::string(key), parts, total);
  Request r;
  r.method = "PUT";
  r.key = key;
  r.body = parts;
  r.body_bytes = total;
  return perform(r);
}

std::error_code Client::put_multipart(const std::string& key, std::span<const ByteView> parts,
                                      std::uint64_t total) {
  const std::uint64_t part_bytes =
      std::max<std::uint64_t>(options_.part_bytes, (total + kMaxParts - 1) / kMaxParts);
  Request start;
  start.method = "POST";
  start.key = key;
  start.query = "uploads=";
  start.max_answer = kMaxXmlBody;
  if (auto ec = perform(start))
    return ec;
  const auto ids = xml_values(
      std::string_view(reinterpret_cast<const char*>(start.answer.data()), start.answer.size()),
      "UploadId");
  if (ids.empty() || ids.front().empty()) {
    log_failure("POST " + key + "?uploads: no UploadId in the answer");
    return Errc::failed;
  }
  const std::string upload = uri_encode(ids.front(), false);
  auto abort_upload = [&](std::error_code ec) {
    Request abort;
    abort.method = "DELETE";
    abort.key = key;
    abort.query = "uploadId=" + upload;
    perform(abort);
    return ec;
  };

  std::string complete = "<CompleteMultipartUpload>";
  std::size_t index = 0;
  std::size_t offset = 0;
  for (int number = 1; index < parts.size(); ++number) {
    // The views of this part: the next part_bytes of the concatenation.
    std::vector<ByteView> views;
    std::uint64_t size = 0;
    while (index < parts.size() && size < part_bytes) {
      const ByteView rest = parts[index].subspan(offset);
      const std::size_t take =
          static_cast<std::size_t>(std::min<std::uint64_t>(rest.size(), part_bytes - size));
      if (take > 0)
        views.push_back(rest.first(take));
      size += take;
      offset += take;
      if (offset == parts[index].size()) {
        ++index;
        offset = 0;
      }
    }
    if (size == 0)
      break;
    Request r;
    r.method = "PUT";
    r.key = key;
    r.query = "partNumber=" + std::to_string(number) + "&uploadId=" + upload;
    r.body = views;
    r.body_bytes = size;
    if (auto ec = perform(r))
      return abort_upload(ec);
    if (r.etag.empty()) {
      log_failure("PUT " + key + " part: no ETag in the answer");
      return abort_upload(Errc::failed);
    }
    complete += "<Part><PartNumber>" + std::to_string(number) + "</PartNumber><ETag>" + r.etag +
                "</ETag></Part>";
  }
  complete += "</CompleteMultipartUpload>";
  const ByteView body = as_bytes(complete);
  Request finish;
  finish.method = "POST";
  finish.key = key;
  finish.query = "uploadId=" + upload;
  finish.body = std::span<const ByteView>(&body, 1);
  finish.body_bytes = body.size();
  finish.max_answer = kMaxXmlBody;
  if (auto ec = perform(finish))
    return abort_upload(ec);
  // A completion can fail after its 200 status line: the error is then in the body.
  if (!error_code_of(finish.answer).empty()) {
    log_failure("POST " + key + " completion: " + error_code_of(finish.answer));
    return abort_upload(Errc::failed);
  }
  return {};
}

std::error_code Client::get_range(std::string_view key, std::uint64_t offset, std::size_t length,
                                  Bytes& out) {
  out.clear();
  if (length == 0)
    return {};
  if (length > options_.max_read_bytes)
    return Errc::too_large;
  Request r;
  r.key = key;
  r.range = std::to_string(offset) + "-" + std::to_string(offset + length - 1);
  r.max_answer = length;
  r.answer.reserve(length);
  if (auto ec = perform(r))
    return ec;
  if (r.answer.size() != length || r.status != 206) {
    log_failure("GET " + std::string(key) + ": the range came back short");
    return Errc::failed;
  }
  out = std::move(r.answer);
  return {};
}

std::error_code Client::get_object(std::string_view key, Bytes& out) {
  out.clear();
  Request r;
  r.key = key;
  r.max_answer = options_.max_read_bytes;
  if (auto ec = perform(r))
    return ec;
  out = std::move(r.answer);
  return {};
}

std::error_code Client::delete_object(std::string_view key) {
  Request r;
  r.method = "DELETE";
  r.key = key;
  const std::error_code ec = perform(r);
  return ec == Errc::not_found ? std::error_code() : ec;
}

std::error_code Client::list(std::string_view prefix, std::vector<ObjectInfo>& out) {
  out.clear();
  std::string token;
  const std::string full_prefix = location_.prefix + std::string(prefix);
  for (;;) {
    Request r;
    // Canonical order: continuation-token, list-type, prefix.
    if (!token.empty())
      r.query = "continuation-token=" + uri_encode(token, false) + "&";
    r.query += "list-type=2";
    if (!full_prefix.empty())
      r.query += "&prefix=" + uri_encode(full_prefix, false);
    r.max_answer = kMaxXmlBody;
    if (auto ec = perform(r))
      return ec;
    const std::string_view xml(reinterpret_cast<const char*>(r.answer.data()), r.answer.size());
    const auto keys = xml_values(xml, "Key");
    const auto sizes = xml_values(xml, "Size");
    if (keys.size() != sizes.size()) {
      log_failure("LIST " + location_.bucket + ": malformed answer");
      return Errc::failed;
    }
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i].rfind(location_.prefix, 0) != 0)
        continue;
      ObjectInfo info;
      info.key = keys[i].substr(location_.prefix.size());
      const auto [end, ec] =
          std::from_chars(sizes[i].data(), sizes[i].data() + sizes[i].size(), info.size);
      if (ec != std::errc() || end != sizes[i].data() + sizes[i].size()) {
        log_failure("LIST " + location_.bucket + ": malformed size");
        return Errc::failed;
      }
      out.push_back(std::move(info));
    }
    const auto truncated = xml_values(xml, "IsTruncated");
    const auto next = xml_values(xml, "NextContinuationToken");
    if (truncated.empty() || truncated.front() != "true" || next.empty() || next.front().empty())
      return {};
    token = next.front();
  }
}

}  // namespace splitfs::objectstore
