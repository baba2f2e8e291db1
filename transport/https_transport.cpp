// HTTPS transport: one libcurl easy handle per transport, so curl keeps the connection alive
// between calls and transparently reconnects when a kept connection turned out to be dead. Peer and
// host verification stay on; the pinned fingerprint replaces trust in a CA. The client certificate
// is installed on curl's SSL context, like the pin.
#include <curl/curl.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <splitfs/errors.hpp>
#include <string>
#include <vector>

#include "common/pieces.hpp"
#include "protocol/codec.hpp"
#include "tls/identity.hpp"
#include "transport/errors.hpp"
#include "transport/transport.hpp"

namespace splitfs::transport {
namespace {

using Clock = std::chrono::steady_clock;

// curl_global_init must run once before the first handle exists; cleanup runs at exit.
class CurlGlobal {
 public:
  CurlGlobal() : code_(curl_global_init(CURL_GLOBAL_DEFAULT)) {}
  ~CurlGlobal() {
    if (code_ == CURLE_OK) {
      curl_global_cleanup();
    }
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
using CurlHandle = std::unique_ptr<CURL, CurlDeleter>;
using CurlList = std::unique_ptr<curl_slist, SlistDeleter>;

class HttpsTransport final : public Transport {
 public:
  HttpsTransport(const Endpoint& endpoint, const Timeouts& timeouts,
                 const ClientCertificate& client)
      : endpoint_(endpoint), address_(endpoint.address()), timeouts_(timeouts), client_(client) {
    if (endpoint_.fingerprint.empty()) {
      throw ConfigError("no certificate fingerprint is pinned for the " +
                        detail::server_label(endpoint_.kind, address_) +
                        "; run splitfs init first");
    }
    ensure_curl_initialized();
    pin_.expected = endpoint_.fingerprint;
    curl_.reset(curl_easy_init());
    if (!curl_) {
      throw Error("libcurl could not create a handle");
    }
    for (const char* header : {"Expect:", "Content-Type: application/octet-stream",
                               "Accept: application/octet-stream"}) {
      // Returns the list's head, or nullptr (the old list untouched) when out of memory.
      curl_slist* extended = curl_slist_append(headers_.get(), header);
      if (extended == nullptr) {
        throw Error("libcurl could not allocate a header list");
      }
      static_cast<void>(headers_.release());
      headers_.reset(extended);
    }
    configure();
  }

  protocol::Reply call(const protocol::Request& request) override {
    // The body's shares are read from the request as they lie (on_read), not copied into a body.
    const protocol::GatheredHttpRequest http = protocol::gather_http(request);
    const std::string url = "https://" + address_ + http.target;
    CURL* curl = curl_.get();
    set(CURLOPT_URL, url.c_str());
    const std::string method(http.method);
    pieces_.clear();
    const bool with_body = method == "POST" || method == "PUT" || http.body;
    if (with_body) {
      if (http.body)
        pieces_ = http.body->pieces();
      upload_ = PieceReader(pieces_);
      set(CURLOPT_POST, 1L);
      set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(upload_.size()));
      // A body in one piece is handed over whole (curl then sends a small one with the header);
      // one in several pieces is read by on_read. Either way it outlives curl_easy_perform below.
      if (pieces_.size() <= 1) {
        set(CURLOPT_POSTFIELDS, pieces_.empty() ? static_cast<const void*>("")
                                                : static_cast<const void*>(pieces_[0].data()));
      } else {
        set(CURLOPT_POSTFIELDS, static_cast<const void*>(nullptr));
      }
    } else {
      set(CURLOPT_HTTPGET, 1L);
    }
    // curl copies the string; nullptr restores the method implied by the options above.
    const bool implied = method == (with_body ? "POST" : "GET");
    set(CURLOPT_CUSTOMREQUEST, implied ? nullptr : method.c_str());

    Bytes body;
    body_ = &body;
    too_large_ = false;
    stalled_ = false;
    moved_ = 0;
    started_ = false;
    // The connect phase has its own limit: the idle clock restarts when the request goes out, and
    // in any case once the connect limit has passed.
    last_activity_ = Clock::now() + timeouts_.connect;
    pin_.presented.clear();
    error_[0] = '\0';
    const CURLcode code = curl_easy_perform(curl);
    body_ = nullptr;
    upload_ = {};
    pieces_.clear();
    if (code != CURLE_OK) {
      fail(code);
    }

    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    protocol::Reply reply;
    if (const std::error_code ec = protocol::decode_http_reply(
            protocol::op_of(request), static_cast<unsigned>(status), body, reply)) {
      if (status == 200) {
        detail::throw_bad_reply(endpoint_.kind, address_, ec.message());
      }
      throw ServerError(detail::server_label(endpoint_.kind, address_) + " answered HTTP " +
                        std::to_string(status) + " without a readable error (" + ec.message() +
                        ")");
    }
    return reply;
  }

  const Endpoint& endpoint() const override { return endpoint_; }

 private:
  template <typename Value>
  void set(CURLoption option, Value value) {
    if (const CURLcode code = curl_easy_setopt(curl_.get(), option, value); code != CURLE_OK) {
      throw Error(std::string("libcurl refused an option: ") + curl_easy_strerror(code));
    }
  }

  void configure() {
    set(CURLOPT_ERRORBUFFER, error_);
    set(CURLOPT_NOSIGNAL, 1L);
    set(CURLOPT_PROTOCOLS_STR, "https");
    set(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    // Environment proxies must not see (or break) traffic meant for our own servers.
    set(CURLOPT_PROXY, "");
    set(CURLOPT_NOPROXY, "*");
    set(CURLOPT_FOLLOWLOCATION, 0L);
    set(CURLOPT_USERAGENT, "splitfs");
    set(CURLOPT_HTTPHEADER, headers_.get());
    set(CURLOPT_TCP_KEEPALIVE, 1L);
    set(CURLOPT_BUFFERSIZE, 512L * 1024);

    set(CURLOPT_SSL_VERIFYPEER, 1L);
    set(CURLOPT_SSL_VERIFYHOST, 2L);
    // No CA store: the pin check inside the handshake is the only trust decision.
    set(CURLOPT_CAINFO, nullptr);
    set(CURLOPT_CAPATH, nullptr);
    // A resumed session skips the certificate, and with it the pin check: always do a full one.
    set(CURLOPT_SSL_SESSIONID_CACHE, 0L);
    set(CURLOPT_SSL_CTX_FUNCTION, &HttpsTransport::on_ssl_ctx);
    set(CURLOPT_SSL_CTX_DATA, static_cast<void*>(this));

    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeouts_.connect.count()));
    set(CURLOPT_NOPROGRESS, 0L);
    set(CURLOPT_XFERINFOFUNCTION, &HttpsTransport::on_progress);
    set(CURLOPT_XFERINFODATA, static_cast<void*>(this));
    set(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(protocol::kMaxMessageBytes));
    set(CURLOPT_READFUNCTION, &HttpsTransport::on_read);
    set(CURLOPT_READDATA, static_cast<void*>(this));
    set(CURLOPT_SEEKFUNCTION, &HttpsTransport::on_seek);
    set(CURLOPT_SEEKDATA, static_cast<void*>(this));
    set(CURLOPT_WRITEFUNCTION, &HttpsTransport::on_write);
    set(CURLOPT_WRITEDATA, static_cast<void*>(this));
  }

  static CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* self_ptr) {
    auto* self = static_cast<HttpsTransport*>(self_ptr);
    try {
      auto* ctx = static_cast<SSL_CTX*>(ssl_ctx);
      tls::pin_server_certificate(ctx, &self->pin_);
      if (!self->client_.cert_file.empty())
        tls::present_client_certificate(ctx, self->client_.cert_file, self->client_.key_file);
      return CURLE_OK;
    } catch (const std::exception& e) {
      self->certificate_problem_ = e.what();
      return CURLE_SSL_CERTPROBLEM;
    }
  }

  // The request body, from the pieces at the upload's position.
  static std::size_t on_read(char* data, std::size_t size, std::size_t count, void* self_ptr) {
    return static_cast<HttpsTransport*>(self_ptr)->upload_.read(
        reinterpret_cast<std::uint8_t*>(data), size * count);
  }

  // curl rewinds the body when it sends the request again (on a fresh connection after a kept one
  // had closed).
  static int on_seek(void* self_ptr, curl_off_t offset, int origin) {
    if (origin != SEEK_SET || offset < 0)
      return CURL_SEEKFUNC_CANTSEEK;
    return static_cast<HttpsTransport*>(self_ptr)->upload_.seek(static_cast<std::uint64_t>(offset))
               ? CURL_SEEKFUNC_OK
               : CURL_SEEKFUNC_FAIL;
  }

  static std::size_t on_write(char* data, std::size_t size, std::size_t count, void* self_ptr) {
    auto* self = static_cast<HttpsTransport*>(self_ptr);
    const std::size_t n = size * count;
    Bytes& body = *self->body_;
    if (n > protocol::kMaxMessageBytes - body.size()) {
      self->too_large_ = true;
      return 0;
    }
    if (body.empty()) {
      curl_off_t length = -1;
      curl_easy_getinfo(self->curl_.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
      if (length > 0 && static_cast<std::size_t>(length) <= protocol::kMaxMessageBytes) {
        body.reserve(static_cast<std::size_t>(length));
      }
    }
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(data);
    body.insert(body.end(), bytes, bytes + n);
    return n;
  }

  static int on_progress(void* self_ptr, curl_off_t, curl_off_t downloaded, curl_off_t,
                         curl_off_t uploaded) {
    auto* self = static_cast<HttpsTransport*>(self_ptr);
    const auto now = Clock::now();
    const curl_off_t moved = downloaded + uploaded;
    if (moved != self->moved_) {
      self->moved_ = moved;
      self->last_activity_ = now;
      return 0;
    }
    if (!self->started_) {
      curl_off_t pretransfer = 0;
      curl_easy_getinfo(self->curl_.get(), CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
      if (pretransfer > 0) {
        self->started_ = true;
        self->last_activity_ = now;
        return 0;
      }
    }
    if (now > self->last_activity_ && now - self->last_activity_ > self->timeouts_.idle) {
      self->stalled_ = true;
      return 1;
    }
    return 0;
  }

  [[noreturn]] void fail(CURLcode code) {
    const std::string& kind = endpoint_.kind;
    const std::string detail = error_[0] != '\0' ? error_ : curl_easy_strerror(code);
    if (!pin_.presented.empty() && pin_.presented != pin_.expected) {
      detail::throw_pin_mismatch(kind, address_, pin_.presented, pin_.expected);
    }
    if (code == CURLE_SSL_CERTPROBLEM && !certificate_problem_.empty()) {
      throw ConfigError("cannot use this client's certificate: " + certificate_problem_);
    }
    if (detail::refused_client_certificate(detail)) {
      detail::throw_client_certificate_refused(kind, address_);
    }
    if (too_large_ || code == CURLE_FILESIZE_EXCEEDED) {
      detail::throw_reply_too_large(kind, address_);
    }
    switch (code) {
      case CURLE_ABORTED_BY_CALLBACK:
        if (stalled_) {
          detail::throw_stalled(kind, address_, timeouts_.idle);
        }
        break;
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
      case CURLE_OPERATION_TIMEDOUT:
        detail::throw_connect_timeout(kind, address_, timeouts_.connect);
      case CURLE_PEER_FAILED_VERIFICATION:
        throw AuthError(detail::server_label(kind, address_) + " failed the certificate check (" +
                        detail + ")");
      case CURLE_SSL_CONNECT_ERROR:
        throw ServerUnavailable(kind, address_,
                                "TLS handshake with " + detail::server_label(kind, address_) +
                                    " failed (" + detail + ")");
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
  ClientCertificate client_;
  std::string certificate_problem_;
  tls::Pin pin_;
  CurlList headers_;
  CurlHandle curl_;
  char error_[CURL_ERROR_SIZE] = {};
  // State of the transfer in progress, read and written by the callbacks.
  std::vector<ByteView> pieces_;  // the request body
  PieceReader upload_;            // where in it curl reads next
  Bytes* body_ = nullptr;
  bool too_large_ = false;
  bool stalled_ = false;
  curl_off_t moved_ = 0;
  bool started_ = false;  // connected (or reusing a connection) and sending the request
  Clock::time_point last_activity_;
};

}  // namespace

std::unique_ptr<Transport> make_https_transport(const Endpoint& endpoint, const Timeouts& timeouts,
                                                const ClientCertificate& client) {
  return std::make_unique<HttpsTransport>(endpoint, timeouts, client);
}

}  // namespace splitfs::transport
