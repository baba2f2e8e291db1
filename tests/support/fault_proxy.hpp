// A fault-injecting TCP proxy for integration tests: a real listening socket on 127.0.0.1 that
// forwards every accepted connection to a target port, on a thread of its own, and counts the bytes
// it forwards each way. Faults are drawn per connection from a seeded random generator, so a run
// that fails can be replayed with its seed:
//   cut    the connection is dropped (both sides reset) once a random number of bytes has passed,
//   stall  forwarding stops for a while at a random point (long enough to trip a client's idle
//          timeout, or not), then goes on,
//   delay  from a random point on, every piece forwarded waits a random bounded time.
// Every fault is bounded: offsets by FaultPlan::max_offset, stalls by stall_for, delays by
// max_delay. Tests can also act directly: cut every connection now, freeze forwarding (accept,
// never forward: a server that hangs), or wait until some amount of traffic has passed.
//
// Memory is bounded: at most kMaxBuffered bytes wait per direction of a connection; beyond that the
// proxy stops reading that side (TCP back-pressure).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace splitfs::testing {

struct FaultPlan {
  // Probabilities, per new connection, that it gets each fault (at most one fault each).
  double cut = 0;
  double stall = 0;
  double delay = 0;
  // A fault starts once the connection has forwarded a uniform random number of bytes in
  // [min_offset, max_offset] (both directions together).
  std::uint64_t min_offset = 0;
  std::uint64_t max_offset = 8u << 20;
  std::chrono::milliseconds stall_for{3000};
  std::chrono::milliseconds max_delay{20};
};

struct ProxyCounters {
  std::uint64_t up = 0;    // bytes forwarded from clients to the target
  std::uint64_t down = 0;  // bytes forwarded from the target to clients
  std::uint64_t connections = 0;
  std::uint64_t cuts = 0;  // connections dropped by a fault (cut_all() is not counted)
  std::uint64_t stalls = 0;
  std::uint64_t delays = 0;
  std::uint64_t faults() const { return cuts + stalls + delays; }
};

class FaultProxy {
 public:
  static constexpr std::size_t kMaxBuffered = 1u << 20;

  // Listens on 127.0.0.1 on a free port; forwards to target_host:target_port. Throws
  // std::runtime_error if the socket cannot be set up.
  FaultProxy(std::string target_host, std::uint16_t target_port, std::uint64_t seed);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::uint64_t seed() const { return seed_; }

  // Where new connections go (e.g. after a server restarted on another port).
  void set_target(std::uint16_t port);
  // Faults for connections accepted from now on; FaultPlan{} turns them off.
  void set_plan(const FaultPlan& plan);
  // Drops every open connection, resetting both sides, with whatever it still buffers; returns
  // once done, so connections made afterwards are not affected.
  void cut_all();
  // While frozen, connections are accepted but nothing is forwarded either way.
  void freeze(bool frozen);

  ProxyCounters counters() const;
  // Waits until at least `bytes` more have gone up (client to target) than when `since` was
  // taken; false on timeout.
  bool wait_for_up(const ProxyCounters& since, std::uint64_t bytes,
                   std::chrono::milliseconds timeout) const;
  bool wait_for_down(const ProxyCounters& since, std::uint64_t bytes,
                     std::chrono::milliseconds timeout) const;
  // Waits until a connection has stalled since `since` was taken; false on timeout.
  bool wait_for_stall(const ProxyCounters& since, std::chrono::milliseconds timeout) const;

 private:
  struct State;
  void run();
  void wake();

  std::uint64_t seed_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::unique_ptr<State> state_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace splitfs::testing
