// Start-up and connection plumbing shared by the two server doors (splitfs-https-server and
// splitfs-tcp-server); a door only supplies the coroutine that serves one TLS connection.
//
// Command line: --data DIR (default <SPLITFS_DEFAULT_DATA_ROOT>/<door>), --bind ADDR (default
// 127.0.0.1), --port N (0 picks a free port), --tls-name NAME (repeatable: extra certificate
// names), --threads N (default 2), --max-connections N (default 256).
//
// Data folder layout: DIR (mode 0700) holds store/ (the share packs and index) and tls/ (key.pem,
// cert.pem). Once listening, the server prints exactly one line to stdout and flushes it:
//   listening on HOST:PORT fingerprint SHA256:<64 lowercase hex>
// with the bound address and port (an IPv6 HOST is in brackets). Start-up failures print one line
// on stderr and exit non-zero. SIGINT or SIGTERM stop the server gracefully: no new connections,
// idle ones are closed, requests in progress are answered (within a few seconds), exit status 0.
//
// Guarantees every connection: TLS 1.3, a handshake deadline, an idle deadline on every read and
// write, and a cap on simultaneous connections (extra ones are closed at once).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
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
  std::chrono::seconds idle_timeout{30};     // no byte moved for this long closes a connection
  std::chrono::seconds shutdown_timeout{2};  // sending our TLS close_notify at the end
  std::chrono::seconds drain_timeout{5};     // how long a stopping server waits for requests
  std::size_t max_connections = 256;
};

// One accepted connection, after its TLS handshake. Everything runs on the connection's strand.
class Connection {
 public:
  Connection(asio::ip::tcp::socket socket, asio::ssl::context& context);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  TlsStream& stream() { return stream_; }
  // Arms the deadline of the next read or write.
  void expires_after(std::chrono::steady_clock::duration timeout) {
    stream_.next_layer().expires_after(timeout);
  }
  // True once the server is stopping: finish the current request, then return.
  bool stopping() const { return stopping_; }
  // Tells whether the session waits for a request of which nothing has arrived yet; a stopping
  // server cancels such a wait at once instead of letting the request in progress fail.
  void set_idle(bool idle) { idle_ = idle; }

  // Called on the strand by the server when it stops.
  void stop();

 private:
  TlsStream stream_;
  bool stopping_ = false;
  bool idle_ = false;
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

// The whole program: parse options, open the store and identity, listen, serve until a signal.
// Returns the process exit status.
int server_main(int argc, char** argv, const Door& door);

// One line on stderr, written at once so lines of concurrent connections do not interleave.
void log_line(std::string_view line);

}  // namespace splitfs::service
