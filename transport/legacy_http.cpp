// The original "HTTPS" server's two operations over plain HTTP with libcurl (the original serves
// plain HTTP; there is no TLS to verify): POST /upload with a multipart field "file" whose filename
// is the stored name, and GET /download/<name> (404 when absent). One easy handle per store, so
// curl reuses a connection when the server keeps it open. Every request is bounded: the connect
// phase by the connect timeout, the whole exchange (one piece of a few KiB) by connect + idle.
#include <curl/curl.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <splitfs/errors.hpp>
#include <string>

#include "transport/errors.hpp"
#include "transport/legacy_store.hpp"
#include "transport/legacy_transport.hpp"

namespace splitfs::transport::legacy {
namespace {

// curl_global_init is reference counted: this pairs one init with one cleanup for this file.
class CurlGlobal {
 public:
  CurlGlobal() : code_(curl_global_init(CURL_GLOBAL_DEFAULT)) {}
  ~CurlGlobal() {
    if (code_ == CURLE_OK)
      curl_global_cleanup();
  }
  CurlGlobal(const CurlGlobal&) = delete;
  CurlGlobal& operator=(const CurlGlobal&) = delete;
  CURLcode code() const { return code_; }

 private:
  CURLcode code_;
};

void ensure_curl_initialized() {
  static const CurlGlobal global;
  if (global.code() != CURLE_OK) {
    throw Error(std::string("libcurl could not be initialized: ") +
                curl_easy_strerror(global.code()));
  }
}

struct CurlDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct MimeDeleter {
  void operator()(curl_mime* mime) const { curl_mime_free(mime); }
};

// An upload's reply is read and dropped; it only has to fit this bound.
constexpr std::size_t kMaxUploadReplyBytes = 64u << 10;

class HttpPieceStore final : public PieceStore {
 public:
  HttpPieceStore(const Endpoint& endpoint, const Timeouts& timeouts)
      : endpoint_(endpoint), address_(endpoint.address()), timeouts_(timeouts) {
    ensure_curl_initialized();
    curl_.reset(curl_easy_init());
    if (!curl_)
      throw Error("libcurl could not create a handle");
    set(CURLOPT_ERRORBUFFER, error_);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_PROTOCOLS_STR, "http");
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    // Environment proxies must not see (or break) traffic meant for the storage servers.
    set(CURLOPT_PROXY, "");
    set(CURLOPT_NOPROXY, "*");
    set(CURLOPT_FOLLOWLOCATION, 0L);
    set(CURLOPT_USERAGENT, "splitfs");
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    // No "Expect: 100-continue": a server that does not answer it would delay every upload.
    headers_.reset(curl_slist_append(nullptr, "Expect:"));
    if (!headers_)
      throw Error("libcurl could not allocate a header list");
    set(CURLOPT_HTTPHEADER, headers_.get());
    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeouts_.connect.count()));
    set(CURLOPT_TIMEOUT_MS, static_cast<long>((timeouts_.connect + timeouts_.idle).count()));
    set(CURLOPT_WRITEFUNCTION, &HttpPieceStore::on_write);
    set(CURLOPT_WRITEDATA, static_cast<void*>(this));
  }

  void put(const std::string& name, ByteView data) override {
    std::unique_ptr<curl_mime, MimeDeleter> mime(curl_mime_init(curl_.get()));
    curl_mimepart* part = mime ? curl_mime_addpart(mime.get()) : nullptr;
    if (part == nullptr || curl_mime_name(part, "file") != CURLE_OK ||
        curl_mime_filename(part, name.c_str()) != CURLE_OK ||
        curl_mime_type(part, "application/octet-stream") != CURLE_OK ||
        curl_mime_data(part, reinterpret_cast<const char*>(data.data()), data.size()) != CURLE_OK) {
      throw Error("libcurl could not build an upload");
    }
    set(CURLOPT_MIMEPOST, static_cast<curl_mime*>(mime.get()));
    // The handle now refers to the new form only, so the previous one can go.
    mime_ = std::move(mime);
    const long status = perform("/upload", kMaxUploadReplyBytes);
    // Anything below 400 is taken as stored: the original may answer an upload with a redirect.
    if (status < 200 || status >= 400) {
      throw ServerError(detail::server_label(endpoint_.kind, address_) +
                        " refused an upload (HTTP " + std::to_string(status) + ")");
    }
  }

  std::optional<Bytes> get(const std::string& name) override {
    set(CURLOPT_HTTPGET, 1L);
    const long status = perform("/download/" + name, kPieceBytes);
    if (status == 404)
      return std::nullopt;
    if (status != 200) {
      throw ServerError(detail::server_label(endpoint_.kind, address_) +
                        " answered a download with HTTP " + std::to_string(status));
    }
    return std::move(body_);
  }

  const Endpoint& endpoint() const override { return endpoint_; }

 private:
  template <typename Value>
  void set(CURLoption option, Value value) {
    if (const CURLcode code = curl_easy_setopt(curl_.get(), option, value); code != CURLE_OK)
      throw Error(std::string("libcurl refused an option: ") + curl_easy_strerror(code));
  }

  // Runs the request set up on the handle; returns the HTTP status with the body in body_.
  long perform(const std::string& target, std::size_t body_limit) {
    const std::string url = "http://" + address_ + target;
    set(CURLOPT_URL, url.c_str());
    body_.clear();
    body_limit_ = body_limit;
    too_large_ = false;
    error_[0] = '\0';
    const CURLcode code = curl_easy_perform(curl_.get());
    if (code != CURLE_OK)
      fail(code);
    long status = 0;
    curl_easy_getinfo(curl_.get(), CURLINFO_RESPONSE_CODE, &status);
    return status;
  }

  static std::size_t on_write(char* data, std::size_t size, std::size_t count, void* self_ptr) {
    auto* self = static_cast<HttpPieceStore*>(self_ptr);
    const std::size_t n = size * count;
    if (n > self->body_limit_ - self->body_.size()) {
      self->too_large_ = true;
      return 0;
    }
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(data);
    self->body_.insert(self->body_.end(), bytes, bytes + n);
    return n;
  }

  [[noreturn]] void fail(CURLcode code) {
    const std::string& kind = endpoint_.kind;
    const std::string detail = error_[0] != '\0' ? error_ : curl_easy_strerror(code);
    if (too_large_) {
      throw ServerError(detail::server_label(kind, address_) + " sent a reply larger than " +
                        std::to_string(body_limit_) + " bytes");
    }
    switch (code) {
      case CURLE_COULDNT_RESOLVE_HOST:
        detail::throw_unreachable(kind, address_, "unknown host name");
      case CURLE_COULDNT_CONNECT: {
        long os_error = 0;
        curl_easy_getinfo(curl_.get(), CURLINFO_OS_ERRNO, &os_error);
        detail::throw_unreachable(kind, address_,
                                  os_error == ECONNREFUSED ? "connection refused"
                                  : os_error != 0
                                      ? std::string(std::strerror(static_cast<int>(os_error)))
                                      : detail);
      }
      case CURLE_OPERATION_TIMEDOUT: {
        curl_off_t connected = 0;
        curl_easy_getinfo(curl_.get(), CURLINFO_CONNECT_TIME_T, &connected);
        if (connected == 0)
          detail::throw_connect_timeout(kind, address_, timeouts_.connect);
        detail::throw_stalled(kind, address_, timeouts_.idle);
      }
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
        detail::throw_connection_lost(kind, address_, detail);
      default:
        break;
    }
    throw ServerError("request to " + detail::server_label(kind, address_) + " failed (" + detail +
                      ")");
  }

  Endpoint endpoint_;
  std::string address_;
  Timeouts timeouts_;
  // Declared before the handle, so it outlives it: the handle refers to the last upload's form.
  std::unique_ptr<curl_mime, MimeDeleter> mime_;
  std::unique_ptr<curl_slist, SlistDeleter> headers_;
  std::unique_ptr<CURL, CurlDeleter> curl_;
  char error_[CURL_ERROR_SIZE] = {};
  Bytes body_;
  std::size_t body_limit_ = 0;
  bool too_large_ = false;
};

}  // namespace

std::unique_ptr<PieceStore> make_http_piece_store(const Endpoint& endpoint,
                                                  const Timeouts& timeouts) {
  return std::make_unique<HttpPieceStore>(endpoint, timeouts);
}

}  // namespace splitfs::transport::legacy
