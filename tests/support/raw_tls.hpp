// A raw TLS client for the tests that talk to a server below the client library: it pins the
// server's certificate, presents an identity or none, and sends anything at all, frames or junk.
// Blocking, with a deadline on every operation. Asio stays in raw_tls.cpp, built once.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/system/error_code.hpp>

#include "common/bytes.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "tests/support/servers.hpp"
#include "tls/identity.hpp"

namespace splitfs::testing {

class RawTls {
 public:
  static constexpr auto kDeadline = std::chrono::seconds(15);

  // Presents `identity`, or without one what $SPLITFS_IDENTITY names (tls::pin_server_certificate).
  explicit RawTls(const ServerProcess& server, const tls::Identity* identity = nullptr);
  // Expects the server to present `fingerprint` instead of its own.
  RawTls(const ServerProcess& server, std::string fingerprint);
  RawTls(const RawTls&) = delete;
  RawTls& operator=(const RawTls&) = delete;
  ~RawTls();

  boost::system::error_code connect();  // TCP connect and TLS handshake
  boost::system::error_code send(ByteView bytes);
  boost::system::error_code send(const std::string& text) { return send(as_bytes(text)); }

  // The next reply frame; nullopt once the connection ended (last_error() says how). Throws on a
  // malformed frame: a server never sends one.
  std::optional<protocol::Frame> read_frame();
  // The reply to `op`, or nullopt if the connection ended first. Throws if it does not decode.
  std::optional<protocol::Reply> read_reply(protocol::Op op);
  std::optional<protocol::Reply> call(const protocol::Request& request);
  // Everything the server sends until it closes the connection (or the deadline).
  std::string read_all();
  // True when the server ends the connection (a TLS close, an alert or a reset; not a timeout).
  bool closed_by_server();

  const boost::system::error_code& last_error() const { return last_error_; }
  const tls::Pin& pin() const;

 private:
  struct Connection;
  std::unique_ptr<Connection> connection_;
  protocol::FrameParser parser_;
  boost::system::error_code last_error_;
};

}  // namespace splitfs::testing
