// Shared by the security tests: two servers that admit only the users a test enrols, client
// identities and homes per user, and raw clients (TLS with or without a certificate, plain TCP)
// that can send anything at all.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <splitfs/client.hpp>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/error.hpp>
#include <catch2/catch.hpp>

#include "protocol/codec.hpp"
#include "tests/support/files.hpp"
#include "tests/support/raw_tls.hpp"
#include "tests/support/servers.hpp"
#include "tls/identity.hpp"
#include "transport/transport.hpp"

namespace splitfs::security_test {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using testing::CommandResult;
using testing::RawTls;
using testing::read_file;
using testing::ServerProcess;
using testing::TempDir;
using testing::write_file;

// Two servers with nobody enrolled, in a process where no identity is presented by default: each
// client presents the identity it is given, or none.
struct SecureServers {
  explicit SecureServers(const std::vector<std::string>& extra_args = {})
      : unset_(), servers(extra_args, testing::Enrol::none) {}

  // Enrols `fingerprint` as `name` on both servers (with a quota such as "300K" if given).
  void enrol(const std::string& name, const std::string& fingerprint,
             const std::string& quota = {}) {
    for (ServerProcess* server : both()) {
      std::vector<std::string> args{"users", "add", name, fingerprint};
      if (!quota.empty()) {
        args.push_back("--quota");
        args.push_back(quota);
      }
      const CommandResult result = server->command(args);
      INFO(result.output);
      REQUIRE(result.status == 0);
    }
  }
  void revoke(const std::string& name) {
    for (ServerProcess* server : both()) {
      const CommandResult result = server->command({"users", "revoke", name});
      INFO(result.output);
      REQUIRE(result.status == 0);
    }
  }
  std::vector<ServerProcess*> both() { return {&servers.https, &servers.tcp}; }

 private:
  struct Unset {
    Unset() { ::unsetenv(tls::kIdentityEnvironment); }
  } unset_;

 public:
  testing::TestServers servers;
};

// A client identity in a scratch folder.
struct Identity {
  TempDir dir{"splitfs-identity"};
  tls::Identity tls = tls::load_or_create_client_identity(dir / "identity");
  transport::ClientCertificate certificate() const {
    return {tls.cert_file.string(), tls.key_file.string()};
  }
};

// A client home pinned to the servers, with its own identity (not enrolled by this).
struct Home {
  Home(testing::TestServers& servers, const std::string& label) : dir("splitfs-home-" + label) {
    fingerprint = init(path(), splitfs::testing::pinned_options(servers.https, servers.tcp))
                      .client_fingerprint;
  }
  fs::path path() const { return dir / "client"; }
  Client client() const { return Client(path()); }
  transport::ClientCertificate certificate() const {
    return {(path() / "identity" / "cert.pem").string(),
            (path() / "identity" / "key.pem").string()};
  }

  TempDir dir;
  std::string fingerprint;
};

inline transport::Endpoint endpoint_of(const std::string& kind, const ServerProcess& server) {
  return {kind, server.host(), server.port(), server.fingerprint()};
}

inline std::unique_ptr<transport::Transport> connect(const std::string& kind,
                                                     const ServerProcess& server,
                                                     const transport::ClientCertificate& cert,
                                                     const transport::Timeouts& timeouts = {}) {
  const transport::Endpoint endpoint = endpoint_of(kind, server);
  return kind == "HTTPS" ? transport::make_https_transport(endpoint, timeouts, cert)
                         : transport::make_tcp_transport(endpoint, timeouts, cert);
}

template <typename T>
T expect(const protocol::Reply& reply) {
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    FAIL("server answered status " << static_cast<int>(error->status) << ": " << error->message);
  }
  REQUIRE(std::holds_alternative<T>(reply));
  return std::get<T>(reply);
}

inline protocol::ErrorReply expect_error(const protocol::Reply& reply, protocol::Status status) {
  REQUIRE(std::holds_alternative<protocol::ErrorReply>(reply));
  const auto& error = std::get<protocol::ErrorReply>(reply);
  INFO("server message: " << error.message);
  CHECK(error.status == status);
  return error;
}

inline Id make_id(std::uint8_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>((std::size_t{seed} * 37) + i);
  return id;
}

inline Bytes pattern(std::size_t size, std::uint8_t seed) {
  Bytes out(size);
  for (std::size_t i = 0; i < size; ++i)
    out[i] = static_cast<std::uint8_t>(seed + i * 13);
  return out;
}

// One request of every kind, for the "on every endpoint and frame type" checks.
inline std::vector<protocol::Request> every_request() {
  return {protocol::Hello{},
          protocol::HasShares{{make_id(1)}},
          protocol::PutShares{{{make_id(1), pattern(100, 1)}}},
          protocol::GetShares{{make_id(1)}},
          protocol::Commit{make_id(2), 1, {{make_id(1), 1}}, pattern(10, 2), pattern(20, 3)},
          protocol::GetFile{make_id(2)},
          protocol::ListFiles{},
          protocol::RemoveFile{make_id(2)},
          protocol::GetFileInfo{make_id(2)},
          protocol::GetStats{},
          protocol::CommitBatch{{protocol::Commit{
              make_id(2), 1, {{make_id(1), 1}}, pattern(10, 2), pattern(20, 3)}}}};
}

// A plain TCP connection (no TLS), for junk before TLS and idle connections.
class PlainSocket {
 public:
  explicit PlainSocket(const ServerProcess& server) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(server.port());
    REQUIRE(::inet_pton(AF_INET, server.host().c_str(), &address.sin_addr) == 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~PlainSocket() { ::close(fd_); }
  PlainSocket(const PlainSocket&) = delete;
  PlainSocket& operator=(const PlainSocket&) = delete;

  bool connected() const { return connected_; }
  bool send(const std::string& text) {
    return ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  // Waits up to `timeout` for the server to close the connection (reading and dropping whatever
  // it sends). True if it did.
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    char buffer[4096];
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0)
        return false;
      pollfd pfd{fd_, POLLIN, 0};
      const int ready = ::poll(&pfd, 1, static_cast<int>(left));
      if (ready <= 0)
        continue;
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0)
        return true;
    }
  }

 private:
  int fd_;
  bool connected_ = false;
};

inline std::string random_text(std::size_t size, unsigned seed) {
  std::string out(size, '\0');
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& c : out) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    c = static_cast<char>(state);
  }
  return out;
}

}  // namespace splitfs::security_test
