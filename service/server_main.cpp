#include "service/server_main.hpp"

#include <malloc.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "common/watermark.hpp"
#include "store/shared_store.hpp"
#include "store/store.hpp"
#include "tls/enrolment.hpp"
#include "tls/identity.hpp"

namespace splitfs::service {

namespace fs = std::filesystem;
using asio::ip::tcp;

namespace {

// A reply's deadline is re-armed after each round of at most this many bytes written.
constexpr std::size_t kWriteRoundBytes = 256u << 10;
constexpr auto kAcceptRetryDelay = std::chrono::milliseconds(100);
constexpr auto kDrainPoll = std::chrono::milliseconds(20);
constexpr auto kTrimPeriod = std::chrono::seconds(1);
// Allocations from this size up are mapped on their own (server_main).
constexpr int kMmapThreshold = 1 << 20;

struct Options {
  std::string data;
  std::string bind = "127.0.0.1";
  int port = 0;
  std::vector<std::string> tls_names;
  // Two event loops per core, at least four: a loop's connections wait while it is blocked in
  // the store (a read from disk, a sync), so more loops than cores keep the cores busy.
  int threads = static_cast<int>(std::clamp(2 * std::thread::hardware_concurrency(), 4u, 64u));
  int max_connections = 1024;
  int max_user_connections = 64;
  int max_unauthenticated = 256;
  int handshake_timeout = 10;
  int idle_timeout = 30;
  StorageSettings storage;
  // The shared store (store/shared_store.hpp) instead of local packs, when --backend is given.
  std::string backend;
  std::string index;
  std::string s3_credentials;
};

// Start-up failure: one line for stderr.
class StartupError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace

// The live connections of a server, so that a stop can reach each of them, and the caps: a new
// connection is unauthenticated until its client is admitted as an enrolled user; the oldest
// unauthenticated connection makes room when a cap is reached.
class ConnectionSet {
 public:
  explicit ConnectionSet(const Limits& limits) : limits_(limits) {}

  // Makes room for a new connection: false if there is none (every slot holds an admitted user).
  bool make_room() {
    std::lock_guard lock(mutex_);
    const bool full = connections_.size() >= limits_.max_connections ||
                      unauthenticated_.size() >= limits_.max_unauthenticated;
    if (!full)
      return true;
    if (unauthenticated_.empty())
      return false;
    // Dropped from the books at once, so a burst of newcomers drops one connection each.
    auto oldest = unauthenticated_.begin();
    Connection* victim = oldest->second;
    unauthenticated_.erase(oldest);
    auto it = connections_.find(victim);
    if (auto connection = it->second.connection.lock()) {
      asio::post(connection->stream().get_executor(), [connection] { connection->abort(); });
    }
    connections_.erase(it);
    return true;
  }
  // False (and the connection is not tracked) once the server is stopping.
  bool add(const std::shared_ptr<Connection>& connection) {
    std::lock_guard lock(mutex_);
    if (stopping_)
      return false;
    const std::uint64_t order = next_order_++;
    connections_.emplace(connection.get(), Entry{connection, order, {}});
    unauthenticated_.emplace(order, connection.get());
    return true;
  }
  // Counts the connection as user's: false if that user is at its cap (or it was dropped).
  bool admit(Connection* connection, const std::string& user) {
    std::lock_guard lock(mutex_);
    auto it = connections_.find(connection);
    if (it == connections_.end())
      return false;
    Entry& entry = it->second;
    if (entry.user == user)
      return true;
    if (per_user_[user] >= limits_.max_user_connections)
      return false;
    forget_user(entry);
    unauthenticated_.erase(entry.order);
    entry.user = user;
    ++per_user_[user];
    return true;
  }
  void remove(Connection* connection) {
    std::lock_guard lock(mutex_);
    auto it = connections_.find(connection);
    if (it == connections_.end())
      return;
    forget_user(it->second);
    unauthenticated_.erase(it->second.order);
    connections_.erase(it);
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return connections_.size();
  }
  // Connections accepted so far.
  std::uint64_t arrivals() const {
    std::lock_guard lock(mutex_);
    return next_order_;
  }
  void stop_all() {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& [raw, entry] : connections_) {
      if (auto connection = entry.connection.lock()) {
        asio::post(connection->stream().get_executor(), [connection] { connection->stop(); });
      }
    }
  }

 private:
  struct Entry {
    std::weak_ptr<Connection> connection;
    std::uint64_t order = 0;
    std::string user;  // empty while unauthenticated
  };
  void forget_user(Entry& entry) {
    if (entry.user.empty())
      return;
    auto it = per_user_.find(entry.user);
    if (it != per_user_.end() && --it->second == 0)
      per_user_.erase(it);
    entry.user.clear();
  }

  const Limits& limits_;
  mutable std::mutex mutex_;
  bool stopping_ = false;
  std::uint64_t next_order_ = 0;
  std::unordered_map<Connection*, Entry> connections_;
  std::map<std::uint64_t, Connection*> unauthenticated_;  // by arrival
  std::unordered_map<std::string, std::size_t> per_user_;
};

// Per-user quotas, measured against what the store says a user occupies on disk (every share held
// for it, referenced or not, and its file records). The book keeps an upper bound per user (the
// last count plus every byte admitted since), so the store is asked again only when that bound
// would cross the quota; bytes of requests still running are reserved, so concurrent requests
// cannot overshoot together. A store that keeps quotas itself (the shared store, whose count is
// one for all the processes that serve it) is handed the quota instead.
class QuotaBook {
 public:
  explicit QuotaBook(store::Store& store) : store_(store) {}

  bool in_store() const { return store_.keeps_quotas(); }

  // Reserves `bytes` for `user`; the refusal to answer if that would exceed `quota`.
  std::optional<protocol::ErrorReply> reserve(const std::string& user, std::uint64_t quota,
                                              std::uint64_t bytes) {
    std::lock_guard lock(mutex_);
    Usage& usage = usage_[user];
    if (!usage.counted || usage.known + usage.reserved + bytes > quota) {
      store::Usage counted;
      // A store that cannot count refuses: a quota fails closed.
      if (store_.usage(user, counted)) {
        return protocol::ErrorReply{
            protocol::Status::internal, "the server could not complete the request", {}};
      }
      usage.known = counted.disk_bytes;
      usage.counted = true;
    }
    if (usage.known + usage.reserved + bytes > quota) {
      return protocol::ErrorReply{protocol::Status::quota_exceeded,
                                  "quota exceeded: storing " + size_text(bytes) +
                                      " more would take user '" + user + "' over its quota of " +
                                      size_text(quota) + " on this server (" +
                                      size_text(usage.known + usage.reserved) + " in use)",
                                  {}};
    }
    usage.reserved += bytes;
    return std::nullopt;
  }
  // Ends a reservation; stored bytes count as used until the next count.
  void release(const std::string& user, std::uint64_t bytes, bool stored) {
    std::lock_guard lock(mutex_);
    Usage& usage = usage_[user];
    usage.reserved -= std::min(usage.reserved, bytes);
    if (stored)
      usage.known += bytes;
  }

  static std::string size_text(std::uint64_t bytes) {
    static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double value = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(units)) {
      value /= 1024;
      ++unit;
    }
    char text[32];
    std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
    return text;
  }

 private:
  struct Usage {
    bool counted = false;
    std::uint64_t known = 0;     // at least what the store holds for the user
    std::uint64_t reserved = 0;  // admitted requests still running
  };
  store::Store& store_;
  std::mutex mutex_;
  std::unordered_map<std::string, Usage> usage_;
};

// What every connection of a server shares: the limits, the connection books, the enrolled users
// and the quotas.
class Access {
 public:
  Access(const Limits& limits, const fs::path& users_file, store::Store& store)
      : limits(limits), connections(this->limits), enrolment(users_file), quotas(store) {}

  const Limits limits;
  ConnectionSet connections;
  tls::Enrolment enrolment;
  QuotaBook quotas;
};

namespace {

void log_exception(std::string_view context, const std::exception_ptr& error) {
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

asio::awaitable<void> run_connection(std::shared_ptr<Connection> connection, Access& access,
                                     Service& service, const Door& door, const Limits& limits) {
  struct Untrack {
    ConnectionSet& set;
    Connection* connection;
    ~Untrack() { set.remove(connection); }
  } untrack{access.connections, connection.get()};

  auto& stream = connection->stream();
  beast::error_code ec;
  connection->expires_after(limits.handshake_timeout);
  connection->set_idle(true);
  co_await stream.async_handshake(asio::ssl::stream_base::server,
                                  asio::redirect_error(asio::use_awaitable, ec));
  connection->set_idle(false);
  if (ec)
    co_return;  // a failed or abandoned handshake: nothing to say to that peer
  connection->identify();

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

// The worker threads' event loops, one each: a connection lives on one loop (handed out in
// turn), so its handlers run on the thread that reads its socket. One loop shared by the threads
// handed each completion to another thread, waking it, for every read of a large request.
class EventLoops {
 public:
  explicit EventLoops(int threads) {
    for (int i = 0; i < std::max(threads, 1); ++i) {
      loops_.push_back(std::make_unique<asio::io_context>(1));
      work_.push_back(asio::make_work_guard(*loops_.back()));
      // A timer makes the loop open its descriptors (epoll, its wake-up and timer fds) now, so
      // the server holds as many from the start as after its first connections.
      reactors_.emplace_back(*loops_.back());
    }
  }
  asio::io_context& first() { return *loops_.front(); }
  asio::io_context& next() { return *loops_[next_.fetch_add(1) % loops_.size()]; }
  // Lets each loop end once the work it holds is done (until then an idle loop waits for more).
  void release() { work_.clear(); }
  void stop() {
    for (auto& loop : loops_)
      loop->stop();
  }
  // Runs every loop on a thread of its own until all have ended.
  void run() {
    std::vector<std::thread> threads;
    threads.reserve(loops_.size());
    for (auto& loop : loops_) {
      threads.emplace_back([&io = *loop] {
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
  }

 private:
  std::vector<std::unique_ptr<asio::io_context>> loops_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<asio::steady_timer> reactors_;
  std::atomic<std::size_t> next_{0};
};

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, EventLoops& loops,
                                  asio::ssl::context& tls_context, Access& access, Service& service,
                                  const Door& door, const Limits& limits) {
  asio::steady_timer backoff(acceptor.get_executor());
  while (acceptor.is_open()) {
    tcp::socket socket(asio::make_strand(loops.next()));
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
    if (!access.connections.make_room()) {
      socket.close(ec);
      continue;
    }
    // Replies are written in pieces (header, body); Nagle would hold the last one back for a
    // delayed ACK and add ~40 ms to every request.
    socket.set_option(tcp::no_delay(true), ec);
    auto connection = std::make_shared<Connection>(std::move(socket), tls_context, access);
    if (!access.connections.add(connection))
      co_return;
    auto executor = connection->stream().get_executor();
    asio::co_spawn(
        executor, run_connection(std::move(connection), access, service, door, limits),
        [](const std::exception_ptr& error) { log_exception("connection failed", error); });
  }
}

// Hands the memory that finished requests freed back to the system once the server has been idle
// for a moment: glibc keeps freed heap in its arenas, so a burst of large requests would otherwise
// leave the resident size up for good. Ends when the timer is cancelled.
asio::awaitable<void> trim_when_idle(asio::steady_timer& timer, const ConnectionSet& connections) {
  std::uint64_t trimmed_at = connections.arrivals();
  for (;;) {
    timer.expires_after(kTrimPeriod);
    beast::error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (ec)
      co_return;
    const std::uint64_t arrivals = connections.arrivals();
    if (arrivals != trimmed_at && connections.size() == 0) {
      ::malloc_trim(0);
      trimmed_at = arrivals;
    }
  }
}

// Waits for SIGINT or SIGTERM, then stops accepting, asks every connection to finish and gives
// them limits.drain_timeout before stopping the event loop outright.
asio::awaitable<void> stop_on_signal(asio::signal_set& signals, tcp::acceptor& acceptor,
                                     EventLoops& loops, ConnectionSet& connections,
                                     asio::steady_timer& trim_timer, const Limits& limits) {
  beast::error_code ec;
  co_await signals.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  if (ec)
    co_return;
  trim_timer.cancel();
  acceptor.close(ec);
  connections.stop_all();
  loops.release();
  const auto deadline = std::chrono::steady_clock::now() + limits.drain_timeout;
  asio::steady_timer timer(acceptor.get_executor());
  while (connections.size() > 0 && std::chrono::steady_clock::now() < deadline) {
    timer.expires_after(kDrainPoll);
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (connections.size() > 0)
    loops.stop();
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

// Enough descriptors for every connection the caps allow, plus the store's.
void raise_descriptor_limit(const Limits& limits) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0)
    return;
  const rlim_t wanted = static_cast<rlim_t>(limits.max_connections) + 512;
  if (limit.rlim_cur >= wanted)
    return;
  limit.rlim_cur = std::min(wanted, limit.rlim_max);
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

int serve(const Options& options, const Door& door) {
  Limits limits;
  limits.max_connections = static_cast<std::size_t>(options.max_connections);
  limits.max_user_connections = static_cast<std::size_t>(options.max_user_connections);
  limits.max_unauthenticated =
      std::min(limits.max_connections, static_cast<std::size_t>(options.max_unauthenticated));
  limits.handshake_timeout = std::chrono::seconds(options.handshake_timeout);
  limits.idle_timeout = std::chrono::seconds(options.idle_timeout);
  raise_descriptor_limit(limits);

  fs::path data = prepare_data_folder(options.data);
  std::unique_ptr<store::Store> store;
  try {
    store = options.backend.empty()
                ? store::Store::open(data / "store", options.storage.store_options(data))
                : store::open_shared(options.backend, options.index, options.s3_credentials,
                                     options.storage.store_options(data));
  } catch (const std::exception& e) {
    throw StartupError(std::string("cannot open the store: ") + e.what());
  }
  const auto compactor = start_background_compaction(*store, data / "store", options.storage);
  Service service(*store);
  std::unique_ptr<Access> access;
  try {
    access = std::make_unique<Access>(limits, data / tls::kUsersFile, *store);
  } catch (const std::exception& e) {
    throw StartupError(std::string("cannot read the enrolled users: ") + e.what());
  }
  if (access->enrolment.size() == 0) {
    log_line("no client is enrolled yet: every request is refused until one is, with " +
             door.program + " --data " + data.string() +
             " users add NAME SHA256:<fingerprint> (`splitfs id` prints a client's fingerprint)");
  }

  tls::Identity identity;
  asio::ssl::context tls_context(asio::ssl::context::tls_server);
  try {
    identity = tls::load_or_create_identity(data, options.tls_names);
    tls::configure_server_context(tls_context.native_handle(), identity);
  } catch (const tls::TlsError& e) {
    throw StartupError(std::string("TLS identity: ") + e.what());
  }

  EventLoops loops(options.threads);
  tcp::acceptor acceptor(asio::make_strand(loops.first()));
  tcp::endpoint endpoint =
      resolve_bind_address(loops.first(), options.bind, static_cast<std::uint16_t>(options.port));
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
  asio::co_spawn(
      acceptor.get_executor(),
      accept_loop(acceptor, loops, tls_context, *access, service, door, limits),
      [](const std::exception_ptr& error) { log_exception("accept loop stopped", error); });
  asio::steady_timer trim_timer(acceptor.get_executor());
  asio::co_spawn(
      acceptor.get_executor(), trim_when_idle(trim_timer, access->connections),
      [](const std::exception_ptr& error) { log_exception("memory trimming stopped", error); });
  asio::co_spawn(
      acceptor.get_executor(),
      stop_on_signal(signals, acceptor, loops, access->connections, trim_timer, limits),
      [](const std::exception_ptr& error) { log_exception("signal handling failed", error); });

  std::cout << "listening on " << host_text(bound.address()) << ":" << bound.port()
            << " fingerprint " << identity.fingerprint << std::endl;

  loops.run();
  return 0;
}

struct UsersCommand {
  std::string name;
  std::string fingerprint;
  std::string quota;
};

int run_users(const std::string& action, const fs::path& data, const UsersCommand& command,
              const Door& door) {
  if (action == "list") {
    const std::vector<tls::User> users = tls::list_users(data);
    if (users.empty()) {
      std::cout << "no enrolled users in " << data.string() << "\n";
      return 0;
    }
    std::size_t width = 4;
    for (const auto& user : users)
      width = std::max(width, user.name.size());
    for (const auto& user : users) {
      const std::string quota =
          user.quota_bytes == 0 ? "none" : QuotaBook::size_text(user.quota_bytes);
      for (const auto& fingerprint : user.fingerprints) {
        std::string name = user.name;
        name.resize(width, ' ');
        std::string quota_column = quota;
        quota_column.resize(std::max<std::size_t>(quota_column.size(), 11), ' ');
        std::cout << name << "  quota " << quota_column << "  " << fingerprint << "\n";
      }
    }
    return 0;
  }
  if (action == "add") {
    std::optional<std::uint64_t> quota;
    if (!command.quota.empty()) {
      quota = parse_size(command.quota);
      if (!quota) {
        log_line(door.program + ": invalid quota '" + command.quota +
                 "': give a size such as 500M, 10G or 1T, or none");
        return 2;
      }
    }
    tls::add_user(data, command.name, command.fingerprint, quota);
    std::cout << "enrolled " << tls::normalized_fingerprint(command.fingerprint) << " as user '"
              << command.name << "'";
    if (quota)
      std::cout << ", quota " << (*quota == 0 ? "none" : QuotaBook::size_text(*quota));
    std::cout << " (in effect at once, also on a running server)\n";
    return 0;
  }
  if (!tls::revoke_user(data, command.name, command.fingerprint)) {
    log_line(door.program + ": no enrolled user '" + command.name + "'" +
             (command.fingerprint.empty() ? "" : " with that fingerprint"));
    return 1;
  }
  std::cout << "revoked " << (command.fingerprint.empty() ? "user" : "a certificate of user")
            << " '" << command.name
            << "' (refused from its next request on; its stored data stays until it is "
               "enrolled again)\n";
  return 0;
}

}  // namespace

Connection::Connection(tcp::socket socket, asio::ssl::context& context, Access& access)
    : stream_(beast::tcp_stream(std::move(socket)), context), access_(access) {}

void Connection::stop() {
  stopping_ = true;
  if (idle_)
    stream_.next_layer().cancel();
}

void Connection::abort() {
  stopping_ = true;
  stream_.next_layer().close();
}

void Connection::start_transfer() {
  in_transfer_ = true;
  transfer_start_ = std::chrono::steady_clock::now();
  transfer_bytes_ = 0;
}

void Connection::arm() {
  const Limits& limits = access_.limits;
  std::chrono::steady_clock::duration timeout =
      user_.empty() ? limits.handshake_timeout : limits.idle_timeout;
  if (in_transfer_) {
    const auto earned = std::chrono::duration<double>(
        static_cast<double>(transfer_bytes_) / static_cast<double>(limits.min_transfer_rate));
    const auto deadline = transfer_start_ + limits.transfer_grace +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(earned);
    const auto left = std::max<std::chrono::steady_clock::duration>(
        deadline - std::chrono::steady_clock::now(), std::chrono::milliseconds(1));
    timeout = std::min(timeout, left);
  }
  stream_.next_layer().expires_after(timeout);
}

void Connection::expect(std::size_t bytes) {
  set_receive_watermark(stream_.next_layer().socket(), bytes, receive_low_watermark_);
}

asio::awaitable<beast::error_code> Connection::write(ByteView head, ByteView body) {
  beast::error_code ec;
  while (!ec && (!head.empty() || !body.empty())) {
    const ByteView first = head.first(std::min(head.size(), kWriteRoundBytes));
    const ByteView second = body.first(std::min(body.size(), kWriteRoundBytes - first.size()));
    // No empty buffer goes in: the TLS stream writes the first buffer it is given, and a write of
    // nothing ends async_write at once, so this loop would spin.
    std::array<asio::const_buffer, 2> round;
    std::size_t count = 0;
    for (const ByteView piece : {first, second}) {
      if (!piece.empty())
        round.at(count++) = asio::const_buffer(piece.data(), piece.size());
    }
    arm();
    const std::size_t n = co_await asio::async_write(stream_, std::span(round).first(count),
                                                     asio::redirect_error(asio::use_awaitable, ec));
    moved(n);
    const std::size_t from_head = std::min(n, head.size());
    head = head.subspan(from_head);
    body = body.subspan(n - from_head);
  }
  co_return ec;
}

void Connection::identify() {
  fingerprint_ = tls::peer_fingerprint(stream_.native_handle());
}

std::optional<protocol::ErrorReply> Connection::admit() {
  if (std::string problem = access_.enrolment.take_problem(); !problem.empty())
    log_line("the users file could not be read again; the previous list stays in force: " +
             problem);
  const std::optional<tls::Account> account =
      fingerprint_.empty() ? std::nullopt : access_.enrolment.lookup(fingerprint_);
  if (!account) {
    refused_ = true;
    // The client's own fingerprint is no secret, and tells its owner what to have enrolled.
    return protocol::ErrorReply{protocol::Status::unauthorized,
                                "this client is not enrolled on this server (certificate " +
                                    (fingerprint_.empty() ? std::string("none") : fingerprint_) +
                                    "); its operator can enrol it with `users add`",
                                {}};
  }
  if (account->name != user_) {
    if (!user_.empty() || !access_.connections.admit(this, account->name)) {
      refused_ = true;
      return protocol::ErrorReply{protocol::Status::busy,
                                  user_.empty()
                                      ? "too many connections for this user; try again later"
                                      : "this client's enrolment changed; connect again",
                                  {}};
    }
    user_ = account->name;
  }
  quota_ = account->quota_bytes;
  return std::nullopt;
}

protocol::Reply Connection::handle(Service& service, const protocol::Request& request) {
  if (auto refusal = admit())
    return *std::move(refusal);
  std::uint64_t incoming = 0;
  if (const auto* put = std::get_if<protocol::PutShares>(&request)) {
    for (const auto& share : put->shares)
      incoming += share.data.size();
  } else if (const auto* commit = std::get_if<protocol::Commit>(&request)) {
    incoming = commit->entry.size() + commit->manifest.size();
  }
  if (quota_ == 0 || incoming == 0)
    return service.handle(user_, request);
  if (access_.quotas.in_store())
    return service.handle(user_, request, quota_);
  if (auto refusal = access_.quotas.reserve(user_, quota_, incoming))
    return *std::move(refusal);
  protocol::Reply reply = service.handle(user_, request);
  access_.quotas.release(user_, incoming, !std::holds_alternative<protocol::ErrorReply>(reply));
  return reply;
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
  // Request and reply buffers run to many MiB. Served by mmap they go back to the system when
  // freed; glibc's default would raise its mmap threshold after the first such free and keep the
  // later ones in the heap, so concurrent large requests would leave the resident size up.
  ::mallopt(M_MMAP_THRESHOLD, kMmapThreshold);

  Options options;
  options.data = default_data_root() + "/" + door.data_subdir;
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
  app.add_option("--threads", options.threads, "Worker threads, one event loop each")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--max-connections", options.max_connections,
                 "Simultaneous connections; more are closed at once")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--max-user-connections", options.max_user_connections,
                 "Simultaneous connections of one user")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--max-unauthenticated", options.max_unauthenticated,
                 "Simultaneous connections not (yet) admitted as an enrolled user; the oldest "
                 "makes room for a newcomer")
      ->check(CLI::Range(1, 65536))
      ->capture_default_str();
  app.add_option("--handshake-timeout", options.handshake_timeout,
                 "Seconds a new connection gets to finish TLS and show an enrolled identity")
      ->check(CLI::Range(1, 600))
      ->capture_default_str();
  app.add_option("--idle-timeout", options.idle_timeout,
                 "Seconds an enrolled connection may stay silent before it is closed")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--backend", options.backend,
                 "Keep the store in an S3 bucket shared with other server processes: "
                 "s3://BUCKET?endpoint=https://HOST:PORT[&region=R][&ca=CA_FILE]; needs --index "
                 "(default: local packs in DATA/store)");
  app.add_option("--index", options.index,
                 "With --backend: the shared index, postgresql://USER@HOST:PORT/DB[?schema=NAME] "
                 "or a file holding it (the password goes in PGPASSFILE, never here)");
  app.add_option("--s3-credentials", options.s3_credentials,
                 "With --backend: a file (mode 0600) with access_key = ... and secret_key = ... "
                 "(default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY)");

  UsersCommand users_command;
  auto* users = app.add_subcommand("users", "Enrol, list and revoke the clients of this server");
  users->require_subcommand(1);
  users->fallthrough();
  auto* users_add = users->add_subcommand(
      "add", "Enrol a client certificate as user NAME (a user may have several)");
  users_add->footer("Example: users add alice SHA256:3f1c... --quota 10G");
  users_add->add_option("name", users_command.name, "User name")->required();
  users_add
      ->add_option("fingerprint", users_command.fingerprint,
                   "The client's certificate fingerprint, as `splitfs id` prints it")
      ->required();
  users_add->add_option("--quota", users_command.quota,
                        "What the user may occupy on this server: 500M, 10G, 1T or none");
  users_add->fallthrough();
  auto* users_list = users->add_subcommand("list", "List the enrolled users");
  users_list->fallthrough();
  auto* users_revoke =
      users->add_subcommand("revoke", "Revoke user NAME, or one of its certificates");
  users_revoke->add_option("name", users_command.name, "User name")->required();
  users_revoke->add_option("fingerprint", users_command.fingerprint,
                           "Revoke only this certificate of the user");
  users_revoke->fallthrough();

  const StorageCommands storage_commands(app, options.storage);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    log_line(door.program + ": " + e.what() + " (see --help)");
    return 2;
  }

  try {
    if (*users) {
      const std::string action = *users_add ? "add" : *users_list ? "list" : "revoke";
      return run_users(action, options.data, users_command, door);
    }
    if (storage_commands.chosen())
      return storage_commands.run(options.data, door.program,
                                  {options.backend, options.index, options.s3_credentials});
    return serve(options, door);
  } catch (const std::exception& e) {
    log_line(door.program + ": " + e.what());
  }
  return 1;
}

}  // namespace splitfs::service
