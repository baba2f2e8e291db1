#include "service/server_main.hpp"

#include <sys/stat.h>

#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "store/store.hpp"
#include "tls/identity.hpp"

#ifndef SPLITFS_DEFAULT_DATA_ROOT
#error "SPLITFS_DEFAULT_DATA_ROOT must name the default folder for server data"
#endif

namespace splitfs::service {

namespace fs = std::filesystem;
using asio::ip::tcp;

namespace {

constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
constexpr auto kDrainPoll = std::chrono::milliseconds(20);

struct Options {
  std::string data;
  std::string bind = "127.0.0.1";
  int port = 0;
  std::vector<std::string> tls_names;
  int threads = 2;
  int max_connections = 256;
};

// Start-up failure: one line for stderr.
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The live connections of a server, so that a stop can reach each of them.
class ConnectionSet {
 public:
  // False (and the connection is not tracked) once the server is stopping.
  bool add(const std::shared_ptr<Connection>& connection) {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return false;
    connections_.emplace(connection.get(), connection);
    return true;
  }
  void remove(Connection* connection) {
    std::lock_guard lock(mutex_);
    connections_.erase(connection);
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return connections_.size();
  }
  void stop_all() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [raw, weak] : connections_) {
      if (auto connection = weak.lock()) {
        asio::post(connection->stream().get_executor(), [connection] { connection->stop(); });
      }
    }
  }

 private:
  mutable std::mutex mutex_;
  bool stopping_ = false;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;
};

void log_exception(std::string_view context, std::exception_ptr error) {
  if (!error)
    return;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    log_line(std::string(context) + ": " + e.what());
  } catch (...) {
    log_line(std::string(context) + ": unknown exception");
  }
}

asio::awaitable<void> run_connection(std::shared_ptr<Connection> connection,
                                     std::shared_ptr<ConnectionSet> connections, Service& service,
                                     const Door& door, const Limits& limits) {
  struct Untrack {
    ConnectionSet& set;
    Connection* connection;
    ~Untrack() { set.remove(connection); }
  } untrack{*connections, connection.get()};

  auto& stream = connection->stream();
  beast::error_code ec;
  connection->expires_after(limits.handshake_timeout);
  connection->set_idle(true);
  co_await stream.async_handshake(asio::ssl::stream_base::server,
                                  asio::redirect_error(asio::use_awaitable, ec));
  connection->set_idle(false);
  if (ec)
    co_return;  // a failed or abandoned handshake: nothing to say to that peer

  if (!connection->stopping()) {
    std::exception_ptr failure;
    try {
      co_await door.serve(*connection, service, limits);
    } catch (...) {
      failure = std::current_exception();
    }
    log_exception("connection closed", failure);
  }

  if (beast::get_lowest_layer(stream).socket().is_open()) {
    // Send our close_notify without waiting for the peer's (RFC 8446 6.1 allows it): an idle
    // client that is not reading would otherwise hold the connection until the deadline.
    SSL* ssl = stream.native_handle();
    SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_RECEIVED_SHUTDOWN);
    connection->expires_after(limits.shutdown_timeout);
    co_await stream.async_shutdown(asio::redirect_error(asio::use_awaitable, ec));
    beast::get_lowest_layer(stream).close();
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, asio::io_context& io,
                                  asio::ssl::context& tls_context,
                                  std::shared_ptr<ConnectionSet> connections, Service& service,
                                  const Door& door, const Limits& limits) {
  asio::steady_timer backoff(acceptor.get_executor());
  while (acceptor.is_open()) {
    tcp::socket socket(asio::make_strand(io));
    beast::error_code ec;
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (!acceptor.is_open() || ec == asio::error::operation_aborted)
      co_return;
    if (ec) {
      // Typically out of file descriptors: wait instead of spinning.
      log_line("accept failed: " + ec.message());
      backoff.expires_after(kAcceptRetryDelay);
      co_await backoff.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (connections->size() >= limits.max_connections) {
      socket.close(ec);
      continue;
    }
    // Replies are written in pieces (header, body); Nagle would hold the last one back for a
    // delayed ACK and add ~40 ms to every request.
    socket.set_option(tcp::no_delay(true), ec);
    auto connection = std::make_shared<Connection>(std::move(socket), tls_context);
    if (!connections->add(connection))
      co_return;
    auto executor = connection->stream().get_executor();
    asio::co_spawn(executor,
                   run_connection(std::move(connection), connections, service, door, limits),
                   [](std::exception_ptr error) { log_exception("connection failed", error); });
  }
}

// Waits for SIGINT or SIGTERM, then stops accepting, asks every connection to finish and gives
// them limits.drain_timeout before stopping the event loop outright.
asio::awaitable<void> stop_on_signal(asio::signal_set& signals, tcp::acceptor& acceptor,
                                     asio::io_context& io,
                                     std::shared_ptr<ConnectionSet> connections,
                                     const Limits& limits) {
  beast::error_code ec;
  co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec)
    co_return;
  acceptor.close(ec);
  connections->stop_all();
  const auto deadline = std::chrono::steady_clock::now() + limits.drain_timeout;
  asio::steady_timer timer(acceptor.get_executor());
  while (connections->size() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(kDrainPoll);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (connections->size() > 0)
    io.stop();
}

fs::path prepare_data_folder(const std::string& data) {
  fs::path dir(data);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir.parent_path().empty() ? fs::path(".") : dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      throw StartupError("cannot create data folder " + dir.string() + ": " +
                         std::generic_category().message(errno));
    }
  }
  if (!fs::is_directory(dir, ec)) {
    throw StartupError("data folder " + dir.string() + " is not a directory");
  }
  fs::path store_dir = dir / "store";
  if (::mkdir(store_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw StartupError("cannot create " + store_dir.string() + ": " +
                       std::generic_category().message(errno));
  }
  return dir;
}

tcp::endpoint resolve_bind_address(asio::io_context& io, const std::string& bind,
                                   std::uint16_t port) {
  beast::error_code ec;
  asio::ip::address address = asio::ip::make_address(bind, ec);
  if (!ec)
    return {address, port};
  tcp::resolver resolver(io);
  auto results = resolver.resolve(bind, std::to_string(port), ec);
  if (ec || results.empty()) {
    throw StartupError("cannot resolve bind address " + bind + ": " +
                       (ec ? ec.message() : std::string("no address")));
  }
  return results.begin()->endpoint();
}

std::string host_text(const asio::ip::address& address) {
  return address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
}

int serve(const Options& options, const Door& door) {
  Limits limits;
  limits.max_connections = static_cast<std::size_t>(options.max_connections);

  fs::path data = prepare_data_folder(options.data);
  std::unique_ptr<store::Store> store;
  try {
    store = store::Store::open(data / "store");
  } catch (const std::exception& e) {
    throw StartupError(std::string("cannot open the store: ") + e.what());
  }
  Service service(*store);

  tls::Identity identity;
  asio::ssl::context tls_context(asio::ssl::context::tls_server);
  try {
    identity = tls::load_or_create_identity(data, options.tls_names);
    tls::configure_server_context(tls_context.native_handle(), identity);
  } catch (const tls::TlsError& e) {
    throw StartupError(std::string("TLS identity: ") + e.what());
  }

  asio::io_context io(options.threads);
  auto connections = std::make_shared<ConnectionSet>();
  tcp::acceptor acceptor(asio::make_strand(io));
  tcp::endpoint endpoint =
      resolve_bind_address(io, options.bind, static_cast<std::uint16_t>(options.port));
  const std::string wanted = host_text(endpoint.address()) + ":" + std::to_string(options.port);
  beast::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec)
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    acceptor.bind(endpoint, ec);
  if (!ec)
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw StartupError("cannot listen on " + wanted + ": " + ec.message());
  tcp::endpoint bound = acceptor.local_endpoint(ec);
  if (ec)
    throw StartupError("cannot read the listening address: " + ec.message());

  asio::signal_set signals(acceptor.get_executor(), SIGINT, SIGTERM);
  asio::co_spawn(acceptor.get_executor(),
                 accept_loop(acceptor, io, tls_context, connections, service, door, limits),
                 [](std::exception_ptr error) { log_exception("accept loop stopped", error); });
  asio::co_spawn(acceptor.get_executor(),
                 stop_on_signal(signals, acceptor, io, connections, limits),
                 [](std::exception_ptr error) { log_exception("signal handling failed", error); });

  std::cout << "listening on " << host_text(bound.address()) << ":" << bound.port()
            << " fingerprint " << identity.fingerprint << std::endl;

  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(options.threads));
  for (int i = 0; i < options.threads; ++i) {
    threads.emplace_back([&io] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (const std::exception& e) {
          log_line(std::string("event loop: ") + e.what());
        }
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  return 0;
}

}  // namespace

Connection::Connection(tcp::socket socket, asio::ssl::context& context)
    : stream_(beast::tcp_stream(std::move(socket)), context) {}

void Connection::stop() {
  stopping_ = true;
  if (idle_)
    stream_.next_layer().cancel();
}

void log_line(std::string_view line) {
  std::string text(line);
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

int server_main(int argc, char** argv, const Door& door) {
  // A write to a closed stdout must not kill a running server.
  std::signal(SIGPIPE, SIG_IGN);

  Options options;
  options.data = std::string(SPLITFS_DEFAULT_DATA_ROOT) + "/" + door.data_subdir;
  options.port = door.default_port;

  CLI::App app(door.description, door.program);
  app.add_option("--data", options.data, "Data folder (store and TLS identity)")
      ->capture_default_str();
  app.add_option("--bind", options.bind, "Address to listen on")->capture_default_str();
  app.add_option("--port", options.port, "TCP port; 0 picks a free one")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  app.add_option("--tls-name", options.tls_names,
                 "Extra DNS name or IP address for the certificate (repeatable)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app.add_option("--threads", options.threads, "Worker threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--max-connections", options.max_connections,
                 "Simultaneous connections; more are closed at once")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    log_line(door.program + ": " + e.what() + " (see --help)");
    return 2;
  }

  try {
    return serve(options, door);
  } catch (const std::exception& e) {
    log_line(door.program + ": " + e.what());
  }
  return 1;
}

}  // namespace splitfs::service
