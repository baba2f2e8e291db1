// The TLS ceiling of the benchmark: one TLS 1.3 stream between two processes over loopback, with
// large writes. The parent sends --bytes of random data in --write-size writes to a child it forks
// as the server; the server reads them all and answers one byte, so the time covers delivery. The
// client verifies the server's certificate against --ca (or --cert) and its name (--name), as a
// real client would; the handshake is not timed. Prints one line, and with --json a JSON object.
//
//   bench_tls_stream --cert CERT.pem --key KEY.pem [--ca CA.pem] [--name localhost]
//                    [--bytes N] [--write-size N] [--json]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr int kIoTimeoutSeconds = 30;  // every socket wait is bounded by this
constexpr unsigned kServerAlarmSeconds = 600;
constexpr std::uint64_t kMaxBytes = 1ull << 40;
constexpr std::size_t kMaxWrite = 16u << 20;

struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using Ctx = std::unique_ptr<SSL_CTX, CtxFree>;
using Ssl = std::unique_ptr<SSL, SslFree>;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  ~Fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

struct Options {
  std::string cert;
  std::string key;
  std::string ca;
  std::string name = "localhost";
  std::uint64_t bytes = 1ull << 30;
  std::size_t write_size = 256u << 10;
  bool json = false;
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "bench_tls_stream: %s", what.c_str());
  if (const unsigned long e = ERR_get_error(); e != 0) {
    char text[256];
    ERR_error_string_n(e, text, sizeof text);
    std::fprintf(stderr, " (%s)", text);
  }
  std::fprintf(stderr, "\n");
  std::exit(1);
}

bool parse_u64(const char* text, std::uint64_t& out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text)
    return false;
  std::uint64_t scale = 1;
  if (*end == 'K' || *end == 'k')
    scale = 1ull << 10;
  else if (*end == 'M' || *end == 'm')
    scale = 1ull << 20;
  else if (*end == 'G' || *end == 'g')
    scale = 1ull << 30;
  if (scale != 1)
    ++end;
  if (*end != '\0' || v > kMaxBytes / scale)
    return false;
  out = v * scale;
  return true;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        fail("missing value after " + arg);
      return argv[++i];
    };
    std::uint64_t n = 0;
    if (arg == "--cert") {
      o.cert = value();
    } else if (arg == "--key") {
      o.key = value();
    } else if (arg == "--ca") {
      o.ca = value();
    } else if (arg == "--name") {
      o.name = value();
    } else if (arg == "--bytes") {
      if (!parse_u64(value(), o.bytes) || o.bytes == 0)
        fail("bad --bytes");
    } else if (arg == "--write-size") {
      if (!parse_u64(value(), n) || n == 0 || n > kMaxWrite)
        fail("bad --write-size (1 byte to 16M)");
      o.write_size = static_cast<std::size_t>(n);
    } else if (arg == "--json") {
      o.json = true;
    } else {
      fail("unknown argument " + arg +
           "\nusage: bench_tls_stream --cert CERT --key KEY [--ca CA] [--name NAME] [--bytes N] "
           "[--write-size N] [--json]");
    }
  }
  if (o.cert.empty() || o.key.empty())
    fail("--cert and --key are required");
  if (o.ca.empty())
    o.ca = o.cert;
  return o;
}

void set_timeouts(int fd) {
  timeval tv{kIoTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

Ctx make_ctx(const SSL_METHOD* method) {
  Ctx ctx(SSL_CTX_new(method));
  if (!ctx)
    fail("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  return ctx;
}

// The child: accepts one connection, reads exactly `bytes`, answers one byte.
int serve(const Options& o, Fd listener) {
  ::alarm(kServerAlarmSeconds);
  Ctx ctx = make_ctx(TLS_server_method());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), o.key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1)
    fail("cannot load the server certificate and key");
  pollfd p{listener.get(), POLLIN, 0};
  if (::poll(&p, 1, kIoTimeoutSeconds * 1000) != 1)
    fail("no client connected");
  Fd conn(::accept(listener.get(), nullptr, nullptr));
  listener.reset();
  if (conn.get() < 0)
    fail("accept");
  set_timeouts(conn.get());
  Ssl ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), conn.get()) != 1 || SSL_accept(ssl.get()) != 1)
    fail("server handshake");
  std::vector<unsigned char> buf(1u << 20);
  std::uint64_t got = 0;
  while (got < o.bytes) {
    const std::uint64_t want = std::min<std::uint64_t>(buf.size(), o.bytes - got);
    std::size_t n = 0;
    if (SSL_read_ex(ssl.get(), buf.data(), static_cast<std::size_t>(want), &n) != 1)
      fail("server read after " + std::to_string(got) + " bytes");
    got += n;
  }
  const unsigned char ack = 1;
  std::size_t written = 0;
  if (SSL_write_ex(ssl.get(), &ack, 1, &written) != 1)
    fail("server ack");
  SSL_shutdown(ssl.get());
  return 0;
}

int run_client(const Options& o, std::uint16_t port, pid_t child) {
  Ctx ctx = make_ctx(TLS_client_method());
  if (SSL_CTX_load_verify_locations(ctx.get(), o.ca.c_str(), nullptr) != 1)
    fail("cannot load the CA file " + o.ca);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  Fd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0)
    fail("socket");
  set_timeouts(sock.get());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    fail("connect");
  Ssl ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), sock.get()) != 1 ||
      SSL_set_tlsext_host_name(ssl.get(), o.name.c_str()) != 1 ||
      SSL_set1_host(ssl.get(), o.name.c_str()) != 1)
    fail("client setup");
  if (SSL_connect(ssl.get()) != 1)
    fail("client handshake (certificate or name not verified?)");

  std::vector<unsigned char> data(o.write_size);
  if (RAND_bytes(data.data(), static_cast<int>(data.size())) != 1)
    fail("RAND_bytes");
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t sent = 0;
  while (sent < o.bytes) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(data.size(), o.bytes - sent));
    std::size_t n = 0;
    if (SSL_write_ex(ssl.get(), data.data(), want, &n) != 1)
      fail("client write after " + std::to_string(sent) + " bytes");
    sent += n;
  }
  unsigned char ack = 0;
  std::size_t n = 0;
  if (SSL_read_ex(ssl.get(), &ack, 1, &n) != 1 || n != 1 || ack != 1)
    fail("no acknowledgement from the server");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string cipher = SSL_get_cipher_name(ssl.get());
  const std::string version = SSL_get_version(ssl.get());
  SSL_shutdown(ssl.get());
  ssl.reset();
  sock.reset();

  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail("the server process failed");
  const double mbps = static_cast<double>(o.bytes) / seconds / 1e6;
  if (o.json) {
    std::printf(
        "{\"bytes\": %llu, \"write_size\": %zu, \"seconds\": %.6f, \"mb_per_s\": %.1f, "
        "\"protocol\": \"%s\", \"cipher\": \"%s\"}\n",
        static_cast<unsigned long long>(o.bytes), o.write_size, seconds, mbps, version.c_str(),
        cipher.c_str());
  } else {
    std::printf("%llu bytes in %.3f s = %.0f MB/s (%s %s, %zu-byte writes)\n",
                static_cast<unsigned long long>(o.bytes), seconds, mbps, version.c_str(),
                cipher.c_str(), o.write_size);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (listener.get() < 0)
    fail("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    fail("cannot listen on loopback");
  const std::uint16_t port = ntohs(addr.sin_port);
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child < 0)
    fail("fork");
  if (child == 0)
    return serve(o, std::move(listener));
  listener.reset();
  return run_client(o, port, child);
}
