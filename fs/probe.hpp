// Whether the two servers answer, cheaply: one small request to each (a file-info lookup of an id
// nobody holds), both at once, under short deadlines of its own, on connections kept between
// probes. The mount polls with it while a server is away, so that pending uploads start as soon
// as both are back; `splitfs status` shows it.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace splitfs::fs {

struct ServerProbe {
  std::string server;   // "HTTPS" or "TCP"
  std::string address;  // "host:port"
  bool reachable = false;
  std::string error;  // why not, when not
  std::chrono::milliseconds latency{0};
  std::string pinned;  // the fingerprint pinned at init; empty for the original servers
};

class ServerProber {
 public:
  // Reads the client configuration in home. Throws splitfs::ConfigError.
  ServerProber(const std::filesystem::path& home, std::chrono::milliseconds timeout);
  ~ServerProber();
  ServerProber(const ServerProber&) = delete;
  ServerProber& operator=(const ServerProber&) = delete;

  // Both servers, HTTPS first; returns within about the timeout. Not thread-safe.
  std::vector<ServerProbe> probe();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace splitfs::fs
