// Server resource hygiene: thousands of connections, polite and abrupt (resets at once, garbage,
// a TLS handshake and nothing more, half a request and a reset, idle sockets held open), must leave
// each server with the file descriptors and about the memory it had before, and serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "protocol/codec.hpp"
#include "tests/integration/reliability_fixture.hpp"
#include "tests/support/process_stats.hpp"
#include "tls/identity.hpp"

using namespace reliability;
using namespace std::chrono_literals;
using splitfs::testing::open_descriptors;
using splitfs::testing::resident_bytes;

namespace {

constexpr std::size_t kMiB = 1u << 20;
constexpr int kWarmUp = 300;
constexpr int kConnections = 2500;     // per round
constexpr std::size_t kHeldOpen = 32;  // idle sockets kept open at once
// RSS may differ by allocator noise; a leak of a few KiB per connection would be ~10 MiB and more.
constexpr std::uint64_t kRssSlack = 8 * kMiB;

enum class Kind { polite, reset, garbage, handshake_only, half_request, idle };
constexpr Kind kKinds[] = {Kind::polite,         Kind::reset,        Kind::garbage,
                           Kind::handshake_only, Kind::half_request, Kind::idle};

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};

class Socket {
 public:
  explicit Socket(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    timeval timeout{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    const int one = 1;  // the request must not wait behind the handshake's last segment
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~Socket() { close(false); }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }
  bool connected() const { return connected_; }
  void send(const std::string& bytes) const {
    [[maybe_unused]] const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  // A reset (abortive) or an orderly close.
  void close(bool reset) {
    if (fd_ < 0)
      return;
    if (reset) {
      linger hard{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    }
    ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
  bool connected_ = false;
};

class Connector {
 public:
  Connector(const ServerProcess& server, bool https) : server_(server), https_(https) {
    pin_.expected = server.fingerprint();
    ctx_.reset(SSL_CTX_new(TLS_client_method()));
    REQUIRE(ctx_);
    splitfs::tls::pin_server_certificate(ctx_.get(), &pin_);
  }

  // One connection of `kind`; idle ones are handed back to be held open. Counts what went wrong
  // on our side (a polite request that got no answer).
  std::unique_ptr<Socket> run(Kind kind) {
    auto socket = std::make_unique<Socket>(server_.port());
    if (!socket->connected()) {
      ++failures;
      return nullptr;
    }
    switch (kind) {
      case Kind::reset:
        socket->close(true);
        return nullptr;
      case Kind::garbage:
        socket->send(std::string(100, 'x'));
        socket->close(false);
        return nullptr;
      case Kind::idle:
        return socket;
      default:
        break;
    }
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx_.get()));
    SSL_set_fd(ssl.get(), socket->fd());
    if (SSL_connect(ssl.get()) != 1) {
      ERR_clear_error();
      ++failures;
      return nullptr;
    }
    if (kind == Kind::handshake_only) {
      socket->close(true);
      return nullptr;
    }
    std::string request;
    if (https_) {
      request = kind == Kind::polite
                    ? "GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    : "POST /v1/shares HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc";
    } else {
      const splitfs::Bytes hello =
          splitfs::protocol::encode_request_frame(splitfs::protocol::Hello{});
      request.assign(hello.begin(), hello.end());
      if (kind == Kind::half_request)
        request += std::string("\x00\x01\x00\x00\x03", 5) + "abc";  // announces 64 KiB
    }
    SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
    if (kind == Kind::half_request) {
      socket->close(true);
      return nullptr;
    }
    char reply[512];
    if (SSL_read(ssl.get(), reply, sizeof reply) <= 0) {
      ERR_clear_error();
      ++failures;
    }
    SSL_shutdown(ssl.get());
    ERR_clear_error();
    socket->close(false);
    return nullptr;
  }

  int failures = 0;

 private:
  const ServerProcess& server_;
  bool https_;
  splitfs::tls::Pin pin_;
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx_;
};

void connections(Connector& connector, int count, std::mt19937_64& random) {
  std::vector<std::unique_ptr<Socket>> held;
  for (int i = 0; i < count; ++i) {
    const Kind kind = kKinds[std::uniform_int_distribution<std::size_t>(0, 5)(random)];
    if (auto socket = connector.run(kind)) {
      held.push_back(std::move(socket));
      if (held.size() >= kHeldOpen) {
        // Half of them reset, half closed in order.
        for (std::size_t k = 0; k < held.size(); ++k)
          held[k]->close(k % 2 == 0);
        held.clear();
      }
    }
  }
}

// Waits (bounded) for the server's descriptors to come down to `expected`, or without one to stop
// changing; returns the last count.
long settle(pid_t pid, std::optional<long> expected = {}) {
  long now = open_descriptors(pid);
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(100ms);
    const long previous = std::exchange(now, open_descriptors(pid));
    if (expected ? now <= *expected : now == previous)
      break;
  }
  return now;
}

// The server's resident size once it has given freed memory back: an idle server trims its heap
// within a second (kTrimPeriod in service/server_main.cpp), so every reading is taken after that
// and not at a moment that may fall before or after it.
std::uint64_t trimmed_resident_bytes(pid_t pid) {
  std::this_thread::sleep_for(2100ms);
  return resident_bytes(pid);
}

}  // namespace

TEST_CASE("thousands of polite and abrupt connections leak no descriptors and no memory",
          "[reliability][hygiene][long]") {
  const std::uint64_t seed = seed_for("hygiene");
  TestServers servers;
  std::mt19937_64 random(seed);
  for (auto* server : {&servers.https, &servers.tcp}) {
    const bool https = server == &servers.https;
    INFO((https ? "HTTPS" : "TCP") << " server, seed " << seed);
    Connector connector(*server, https);
    connections(connector, kWarmUp, random);
    const long fds_before = settle(server->pid());
    const std::uint64_t rss_before = trimmed_resident_bytes(server->pid());

    // Two rounds: memory a server keeps after the first is its allocator's; a leak would grow
    // again in the second.
    const auto start = Clock::now();
    connections(connector, kConnections, random);
    const long fds_middle = settle(server->pid(), fds_before);
    const std::uint64_t rss_middle = trimmed_resident_bytes(server->pid());
    connections(connector, kConnections, random);
    const double took = seconds_since(start);
    const long fds_after = settle(server->pid(), fds_before);
    const std::uint64_t rss_after = trimmed_resident_bytes(server->pid());
    std::printf(
        "hygiene (%s): %d connections in %.1f s (%d not answered), descriptors %ld -> %ld -> %ld, "
        "RSS %.1f -> %.1f -> %.1f MiB\n",
        https ? "HTTPS" : "TCP", 2 * kConnections, took, connector.failures, fds_before, fds_middle,
        fds_after, static_cast<double>(rss_before) / kMiB, static_cast<double>(rss_middle) / kMiB,
        static_cast<double>(rss_after) / kMiB);
    std::fflush(stdout);
    CHECK(fds_before > 0);
    CHECK(fds_middle <= fds_before);
    CHECK(fds_after <= fds_before);
    if (kResidentSizeMeaningful) {
      // The first round may grow the heap (more connections at once under a loaded machine); a
      // leak keeps growing, so after the second round the trimmed heap must not pass the higher
      // of the earlier readings.
      CHECK(rss_after <= std::max(rss_before, rss_middle) + kRssSlack / 4);
    }
    CHECK(connector.failures == 0);
  }

  // Both still serve.
  TempDir work("splitfs-hygiene");
  splitfs::init(work / "client", splitfs::testing::pinned_options(servers.https, servers.tcp));
  const std::string data = content(seed, 3 * kMiB + 1);
  write_file(work / "file.bin", data);
  splitfs::Client client(work / "client");
  client.store(work / "file.bin", "file.bin");
  CHECK(read_file(client.fetch("file.bin", work / "out.bin")) == data);
}
