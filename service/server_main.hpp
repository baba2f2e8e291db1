// Start-up and connection plumbing shared by the two server doors (splitfs-https-server and
// splitfs-tcp-server); a door only supplies the coroutine that serves one TLS connection.
//
// Command line: --data DIR (default <SPLITFS_DEFAULT_DATA_ROOT>/<door>), --bind ADDR (default
// 127.0.0.1), --port N (0 picks a free port), --tls-name NAME (repeatable: extra certificate
// names), --threads N (one event loop each; default twice the cores, at least 4),
// --max-connections N (default 1024), --max-user-connections N (default 64),
// --max-unauthenticated N (default 256). Operator commands, which work on DIR while the server
// runs (they never touch the store):
//   users add NAME SHA256:<hex> [--quota SIZE]   enrol a client certificate as user NAME
//   users list                                   the enrolled users, quotas and fingerprints
//   users revoke NAME [SHA256:<hex>]             revoke a user (or one of its certificates)
// Storage: --compact-interval SECONDS (default 600), --garbage-grace SECONDS (default 3600),
// --capacity SIZE (default none), --reserve SIZE (default 8M), and the commands compact, check and
// stats (service.hpp, StorageSettings and StorageCommands).
// Shared store (store/shared_store.hpp, docs/deployment.md), for several server processes on one
// store: --backend s3://BUCKET?endpoint=https://HOST:PORT[&region=R][&ca=FILE] (packs as objects
// in an S3-compatible bucket instead of DATA/store), --index postgresql://USER@HOST:PORT/DB
// [?schema=NAME] or a file holding it (the index; the password in PGPASSFILE), --s3-credentials
// FILE (access_key and secret_key; default $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY). The
// commands compact, check and stats given with them work on the shared store; quotas are then
// counted in the index, one count for all the processes.
//
// Data folder layout: DIR (mode 0700) holds store/ (the share packs and index), tls/ (key.pem,
// cert.pem), users (the enrolled fingerprints, tls/enrolment.hpp) and RESERVE (space held for
// when the disk fills up, store.hpp). Once listening, the server
// prints exactly one line to stdout and flushes it:
//   listening on HOST:PORT fingerprint SHA256:<64 lowercase hex>
// with the bound address and port (an IPv6 HOST is in brackets). Start-up failures print one line
// on stderr and exit non-zero. SIGINT or SIGTERM stop the server gracefully: no new connections,
// idle ones are closed, requests in progress are answered (within a few seconds), exit status 0.
//
// Guarantees every connection: TLS 1.3 with a client certificate; a handshake deadline; an idle
// deadline on every read and write; a total deadline on every request and every reply (after a
// grace period a transfer must keep an average minimum rate, so a client dribbling a byte every few
// seconds is cut off); caps on simultaneous connections overall and per user. A connection whose
// client is not (or no longer) enrolled counts as unauthenticated: those are capped apart, wait at
// most the handshake deadline for their first request, and the oldest is dropped to make room for
// a newcomer, so idle or half-open connections cannot lock enrolled clients out.
//
// Every request is authenticated on its own: the client's certificate fingerprint is looked up in
// the users file (re-read when it changes), so a revoked client is refused on its next request.
// The request then acts as the enrolled user name in the store, within that user's quota.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "service/service.hpp"

namespace splitfs::service {

namespace asio = boost::asio;
namespace beast = boost::beast;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

struct Limits {
  std::chrono::seconds handshake_timeout{10};
  std::chrono::seconds idle_timeout{30};  // no byte moved for this long closes a connection
  // A request (or a reply) gets this long, plus one second per min_transfer_rate bytes moved.
  std::chrono::seconds transfer_grace{10};
  std::size_t min_transfer_rate = 16u << 10;  // bytes per second
  std::chrono::seconds shutdown_timeout{2};   // sending our TLS close_notify at the end
  std::chrono::seconds drain_timeout{5};      // how long a stopping server waits for requests
  std::size_t max_connections = 1024;
  std::size_t max_user_connections = 64;
  std::size_t max_unauthenticated = 256;
};

class Access;

// One accepted connection, after its TLS handshake. Everything runs on the connection's strand.
class Connection {
 public:
  Connection(asio::ip::tcp::socket socket, asio::ssl::context& context, Access& access);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  TlsStream& stream() { return stream_; }
  // Writes `head` then `body` whole, re-arming the deadline for every 256 KiB (the caller starts
  // the transfer). Both doors write through it, so the stream's composed write is built once.
  asio::awaitable<beast::error_code> write(ByteView head, ByteView body = {});
  // Arms the deadline of the next read or write.
  void expires_after(std::chrono::steady_clock::duration timeout) {
    stream_.next_layer().expires_after(timeout);
  }
  // True once the server is stopping, or the connection was refused: finish the current request,
  // then return.
  bool stopping() const { return stopping_ || refused_; }
  // Tells whether the session waits for a request of which nothing has arrived yet; a stopping
  // server cancels such a wait at once instead of letting the request in progress fail.
  void set_idle(bool idle) { idle_ = idle; }

  // Called on the strand by the server when it stops.
  void stop();
  // Called on the strand when the server needs the slot: closes the socket at once.
  void abort();

  // Deadlines. A transfer is one request being received or one reply being sent: it starts with
  // its first byte and must finish within Limits::transfer_grace plus one second per
  // Limits::min_transfer_rate bytes moved, and never stall for the idle timeout.
  void start_transfer();
  void moved(std::size_t bytes) { transfer_bytes_ += bytes; }
  void end_transfer() { in_transfer_ = false; }
  bool in_transfer() const { return in_transfer_; }
  // Arms the next read or write: the transfer's deadline, or while waiting for a request the idle
  // timeout (the handshake timeout for a client that is not enrolled).
  void arm();
  // Before a read: `bytes` more of the request under way are still to come (0: unknown); sets the
  // socket's receive_watermark() for them.
  void expect(std::size_t bytes);

  // Authentication, per request. admit() checks that the client is enrolled and within its
  // connection cap before a request's body is read; it returns the refusal to answer otherwise
  // (the connection then closes). handle() checks again (a client revoked meanwhile is refused),
  // applies the user's quota and hands the request to the service as that user.
  std::optional<protocol::ErrorReply> admit();
  protocol::Reply handle(Service& service, const protocol::Request& request);

  // After the handshake: who the client is, as far as TLS can tell.
  void identify();
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& user() const { return user_; }  // empty until admitted

 private:
  TlsStream stream_;
  Access& access_;
  bool stopping_ = false;
  bool idle_ = false;
  bool refused_ = false;
  std::string fingerprint_;
  std::string user_;
  std::uint64_t quota_ = 0;
  bool in_transfer_ = false;
  std::chrono::steady_clock::time_point transfer_start_;
  std::size_t transfer_bytes_ = 0;
  int receive_low_watermark_ = 1;  // the socket's, as last set by expect()
};

struct Door {
  std::string program;      // executable name, for messages and --help
  std::string description;  // one line for --help
  std::string data_subdir;  // default data folder: <SPLITFS_DEFAULT_DATA_ROOT>/<data_subdir>
  std::uint16_t default_port = 0;
  // Serves one connection whose TLS handshake succeeded; the connection is shut down once the
  // coroutine returns. Exceptions are logged and close the connection.
  std::function<asio::awaitable<void>(Connection&, Service&, const Limits&)> serve;
};

// <source tree>/server_files, where a server keeps its data unless told otherwise. Fixed at build
// time, in a file of its own (default_data_root.cpp): no other file's compile command names the
// source folder, so every checkout shares the compile cache for them.
std::string default_data_root();

// The whole program: parse options, open the store and identity, listen, serve until a signal.
// Returns the process exit status.
int server_main(int argc, char** argv, const Door& door);

// One line on stderr, written at once so lines of concurrent connections do not interleave.
void log_line(std::string_view line);

}  // namespace splitfs::service
