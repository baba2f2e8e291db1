#include "tests/support/fault_proxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>
#include <list>
#include <random>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace splitfs::testing {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadBytes = 64u << 10;
constexpr auto kMaxPollWait = std::chrono::milliseconds(50);
constexpr auto kWaitPoll = std::chrono::milliseconds(5);

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("fault proxy: " + what + ": " + std::generic_category().message(errno));
}

// Closes with a reset instead of a orderly shutdown, as a crashed peer or a cut cable looks.
void reset_close(int& fd) {
  if (fd < 0)
    return;
  linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  ::close(fd);
  fd = -1;
}

struct Piece {
  std::vector<std::uint8_t> data;
  std::size_t offset = 0;
  Clock::time_point release;
};

// One direction of a connection: bytes read from one socket wait here until written to the other.
struct Pipe {
  std::deque<Piece> queue;
  std::size_t buffered = 0;
  bool eof = false;   // the reading side closed
  bool shut = false;  // the writing side was shut down after everything was written
  Clock::time_point last_release;
  bool ready(Clock::time_point now) const { return !queue.empty() && queue.front().release <= now; }
};

enum class Fault { none, cut, stall, delay };

struct Connection {
  int client = -1;
  int server = -1;
  bool connecting = true;
  Pipe up;    // client to server
  Pipe down;  // server to client
  std::uint64_t moved = 0;
  Fault fault = Fault::none;
  std::uint64_t fault_at = 0;
  bool fault_started = false;
  Clock::time_point stalled_until;
  bool closed = false;

  void drop() {
    reset_close(client);
    reset_close(server);
    closed = true;
  }
  ~Connection() {
    if (client >= 0)
      ::close(client);
    if (server >= 0)
      ::close(server);
  }
};

}  // namespace

struct FaultProxy::State {
  std::mutex mutex;
  std::string host;
  std::uint16_t target_port = 0;
  FaultPlan plan;
  bool frozen = false;
  std::uint64_t cut_requests = 0;
  std::atomic<std::uint64_t> cuts_processed{0};

  std::atomic<std::uint64_t> up{0};
  std::atomic<std::uint64_t> down{0};
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> cuts{0};
  std::atomic<std::uint64_t> stalls{0};
  std::atomic<std::uint64_t> delays{0};
};

FaultProxy::FaultProxy(std::string target_host, std::uint16_t target_port, std::uint64_t seed)
    : seed_(seed), state_(std::make_unique<State>()) {
  state_->host = std::move(target_host);
  state_->target_port = target_port;
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0)
    fail("socket");
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::listen(listen_fd_, 512) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(listen_fd_);
    fail("listen");
  }
  port_ = ntohs(address.sin_port);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    ::close(listen_fd_);
    fail("eventfd");
  }
  thread_ = std::thread([this] { run(); });
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  wake();
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_fd_);
}

void FaultProxy::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void FaultProxy::set_target(std::uint16_t port) {
  std::lock_guard lock(state_->mutex);
  state_->target_port = port;
}

void FaultProxy::set_plan(const FaultPlan& plan) {
  {
    std::lock_guard lock(state_->mutex);
    state_->plan = plan;
  }
  wake();
}

void FaultProxy::cut_all() {
  std::uint64_t request = 0;
  {
    std::lock_guard lock(state_->mutex);
    request = ++state_->cut_requests;
  }
  wake();
  // Done when the proxy thread has acted on it, so that a connection made afterwards survives.
  while (state_->cuts_processed.load() < request && !stop_)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void FaultProxy::freeze(bool frozen) {
  {
    std::lock_guard lock(state_->mutex);
    state_->frozen = frozen;
  }
  wake();
}

ProxyCounters FaultProxy::counters() const {
  ProxyCounters c;
  c.up = state_->up.load();
  c.down = state_->down.load();
  c.connections = state_->connections.load();
  c.cuts = state_->cuts.load();
  c.stalls = state_->stalls.load();
  c.delays = state_->delays.load();
  return c;
}

bool FaultProxy::wait_for_up(const ProxyCounters& since, std::uint64_t bytes,
                             std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (state_->up.load() < since.up + bytes) {
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(kWaitPoll);
  }
  return true;
}

bool FaultProxy::wait_for_down(const ProxyCounters& since, std::uint64_t bytes,
                               std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (state_->down.load() < since.down + bytes) {
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(kWaitPoll);
  }
  return true;
}

bool FaultProxy::wait_for_stall(const ProxyCounters& since,
                                std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  while (state_->stalls.load() <= since.stalls) {
    if (Clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(kWaitPoll);
  }
  return true;
}

void FaultProxy::run() {
  std::mt19937_64 random(seed_);
  std::list<Connection> connections;
  std::uint64_t cuts_done = 0;
  std::vector<std::uint8_t> buffer(kReadBytes);

  // Reads what `from` has into `pipe`; false if the connection must be dropped.
  auto pull = [&](Connection& c, int from, Pipe& pipe, const FaultPlan& plan,
                  Clock::time_point now) {
    const ssize_t n = ::recv(from, buffer.data(), buffer.size(), 0);
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (n == 0) {
      pipe.eof = true;
      return true;
    }
    Piece piece;
    piece.data.assign(buffer.begin(), buffer.begin() + n);
    piece.release = now;
    c.moved += static_cast<std::uint64_t>(n);
    if (c.fault != Fault::none && !c.fault_started && c.moved >= c.fault_at) {
      c.fault_started = true;
      switch (c.fault) {
        case Fault::cut:
          ++state_->cuts;
          return false;
        case Fault::stall:
          ++state_->stalls;
          c.stalled_until = now + plan.stall_for;
          break;
        case Fault::delay:
          ++state_->delays;
          break;
        case Fault::none:
          break;
      }
    }
    if (c.fault == Fault::delay && c.fault_started && plan.max_delay.count() > 0) {
      const auto wait = std::chrono::milliseconds(
          std::uniform_int_distribution<std::int64_t>(0, plan.max_delay.count())(random));
      piece.release = std::max(pipe.last_release, now + wait);
    }
    pipe.last_release = piece.release;
    pipe.buffered += piece.data.size();
    pipe.queue.push_back(std::move(piece));
    return true;
  };

  // Writes the released pieces of `pipe` to `to`; false if the connection must be dropped.
  auto push = [&](int to, Pipe& pipe, std::atomic<std::uint64_t>& counter, Clock::time_point now) {
    while (pipe.ready(now)) {
      Piece& piece = pipe.queue.front();
      const ssize_t n = ::send(to, piece.data.data() + piece.offset,
                               piece.data.size() - piece.offset, MSG_NOSIGNAL);
      if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      piece.offset += static_cast<std::size_t>(n);
      pipe.buffered -= static_cast<std::size_t>(n);
      counter += static_cast<std::uint64_t>(n);
      if (piece.offset < piece.data.size())
        return true;
      pipe.queue.pop_front();
    }
    if (pipe.eof && pipe.queue.empty() && !pipe.shut) {
      ::shutdown(to, SHUT_WR);
      pipe.shut = true;
    }
    return true;
  };

  std::vector<pollfd> fds;
  std::vector<Connection*> owners;  // per pollfd entry past the first two
  while (!stop_) {
    FaultPlan plan;
    bool frozen = false;
    std::string host;
    std::uint64_t cut_requests = 0;
    {
      std::lock_guard lock(state_->mutex);
      plan = state_->plan;
      frozen = state_->frozen;
      host = state_->host;
      cut_requests = state_->cut_requests;
    }
    if (cut_requests != cuts_done) {
      cuts_done = cut_requests;
      for (Connection& c : connections)
        c.drop();
      state_->cuts_processed = cuts_done;
    }
    connections.remove_if([](const Connection& c) { return c.closed; });

    auto now = Clock::now();
    auto wait = kMaxPollWait;
    fds.clear();
    owners.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (Connection& c : connections) {
      const bool stalled = frozen || c.stalled_until > now;
      short client_events = 0;
      short server_events = 0;
      if (c.connecting) {
        server_events = POLLOUT;
      } else if (!stalled) {
        if (!c.up.eof && c.up.buffered < kMaxBuffered)
          client_events |= POLLIN;
        if (!c.down.eof && c.down.buffered < kMaxBuffered)
          server_events |= POLLIN;
        if (c.up.ready(now))
          server_events |= POLLOUT;
        if (c.down.ready(now))
          client_events |= POLLOUT;
        for (const Pipe* pipe : {&c.up, &c.down}) {
          if (!pipe->queue.empty() && pipe->queue.front().release > now) {
            wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(
                                      pipe->queue.front().release - now));
          }
        }
      } else if (!frozen) {
        wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(c.stalled_until - now));
      }
      fds.push_back({c.client, client_events, 0});
      fds.push_back({c.server, server_events, 0});
      owners.push_back(&c);
    }
    const int ready = ::poll(fds.data(), fds.size(), static_cast<int>(wait.count()));
    if (ready < 0 && errno != EINTR)
      break;
    now = Clock::now();
    if (fds[0].revents & POLLIN) {
      std::uint64_t value = 0;
      [[maybe_unused]] const ssize_t n = ::read(wake_fd_, &value, sizeof value);
    }

    for (std::size_t i = 0; i < owners.size(); ++i) {
      Connection& c = *owners[i];
      if (c.closed)
        continue;
      const short client_revents = fds[2 + 2 * i].revents;
      const short server_revents = fds[3 + 2 * i].revents;
      if (c.connecting) {
        if (!(server_revents & (POLLOUT | POLLERR | POLLHUP)))
          continue;
        int error = 0;
        socklen_t length = sizeof error;
        ::getsockopt(c.server, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) {
          c.drop();  // the target is down: the client sees a reset, as if it had connected there
          continue;
        }
        c.connecting = false;
        continue;
      }
      constexpr short kGone = POLLHUP | POLLERR;
      if (frozen || c.stalled_until > now) {
        // Nothing moves; a peer that went away meanwhile ends the connection.
        if ((client_revents | server_revents) & kGone)
          c.drop();
        continue;
      }
      // A side that already ended and now reports a hang-up or an error is gone for good.
      auto take = [&](int fd, Pipe& pipe, short revents) {
        if (!(revents & (POLLIN | kGone)))
          return true;
        if (pipe.eof)
          return !(revents & kGone);
        return pull(c, fd, pipe, plan, now);
      };
      bool alive = take(c.client, c.up, client_revents) && take(c.server, c.down, server_revents);
      if (alive)
        alive = push(c.server, c.up, state_->up, now) && push(c.client, c.down, state_->down, now);
      if (!alive) {
        c.drop();
        continue;
      }
      if (c.up.shut && c.down.shut) {
        ::close(c.client);
        ::close(c.server);
        c.client = c.server = -1;
        c.closed = true;
      }
    }

    if (fds[1].revents & POLLIN) {
      // What holds for a connection is what was set before it was accepted.
      std::uint16_t target = 0;
      {
        std::lock_guard lock(state_->mutex);
        plan = state_->plan;
        target = state_->target_port;
      }
      for (;;) {
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0)
          break;
        Connection& c = connections.emplace_back();
        c.client = client;
        ++state_->connections;
        const int one = 1;
        ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.server = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(target);
        if (c.server < 0 || ::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
          c.drop();
          continue;
        }
        ::setsockopt(c.server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (::connect(c.server, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 &&
            errno != EINPROGRESS) {
          c.drop();
          continue;
        }
        // At most one fault per connection, drawn in accept order so a seed replays a run.
        const double draw = std::uniform_real_distribution<>(0, 1)(random);
        if (draw < plan.cut)
          c.fault = Fault::cut;
        else if (draw < plan.cut + plan.stall)
          c.fault = Fault::stall;
        else if (draw < plan.cut + plan.stall + plan.delay)
          c.fault = Fault::delay;
        if (c.fault != Fault::none) {
          c.fault_at = std::uniform_int_distribution<std::uint64_t>(
              plan.min_offset, std::max(plan.min_offset, plan.max_offset))(random);
        }
      }
    }
  }
  for (Connection& c : connections)
    c.drop();
}

}  // namespace splitfs::testing
