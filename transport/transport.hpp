// How the client reaches one server: a request goes out, a reply comes back. The HTTPS transport
// (libcurl) and the TCP transport (Boost.Asio + OpenSSL) implement the same interface over the same
// protocol messages, so the library above never knows which door it talks to.
//
// Both verify the server by its pinned certificate fingerprint on every connection, present the
// client's own certificate (the server maps it to an enrolled user), keep one connection alive
// between calls, and bound every call in time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "protocol/messages.hpp"

namespace splitfs::transport {

struct Endpoint {
  std::string kind;  // "HTTPS" or "TCP", for messages
  std::string host;  // name or address
  std::uint16_t port = 0;
  std::string fingerprint;  // "SHA256:<hex>" pinned at init
  // "host:port", an IPv6 literal in brackets: "[::1]:5000".
  std::string address() const {
    const bool ipv6 = host.find(':') != std::string::npos && !host.starts_with('[');
    return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
};

struct Timeouts {
  std::chrono::milliseconds connect{3000};
  // A call fails when no byte moves for this long (a dead or stalled server).
  std::chrono::milliseconds idle{15000};
};

// The client's TLS identity (PEM files; the key readable by its owner only). Empty: the identity
// $SPLITFS_IDENTITY names, if any (tls/identity.hpp).
struct ClientCertificate {
  std::string cert_file;
  std::string key_file;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Sends one request and returns the reply; a server-reported failure is an ErrorReply, not an
  // exception. Throws splitfs::ServerUnavailable (connect failure, timeout, connection lost),
  // splitfs::AuthError (certificate does not match the pin, the message showing both fingerprints;
  // or the server refused this client's certificate) and splitfs::ServerError (a reply that does
  // not decode). Not thread-safe: one caller at a time.
  virtual protocol::Reply call(const protocol::Request& request) = 0;
  virtual const Endpoint& endpoint() const = 0;
};

std::unique_ptr<Transport> make_https_transport(const Endpoint& endpoint, const Timeouts& timeouts,
                                                const ClientCertificate& client = {});
std::unique_ptr<Transport> make_tcp_transport(const Endpoint& endpoint, const Timeouts& timeouts,
                                              const ClientCertificate& client = {});

// Connects, completes a TLS handshake accepting any certificate, and returns its fingerprint. Only
// for explicit trust-on-first-use at init. Throws splitfs::ServerUnavailable.
std::string probe_fingerprint(const std::string& kind, const std::string& host, std::uint16_t port,
                              std::chrono::milliseconds timeout);

}  // namespace splitfs::transport
