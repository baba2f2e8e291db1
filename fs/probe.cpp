#include "fs/probe.hpp"

#include <array>
#include <future>
#include <splitfs/errors.hpp>

#include "core/config.hpp"
#include "protocol/messages.hpp"
#include "transport/legacy_transport.hpp"
#include "transport/transport.hpp"

namespace splitfs::fs {

using Clock = std::chrono::steady_clock;

struct ServerProber::Impl {
  core::ClientConfig config;
  std::array<std::unique_ptr<transport::Transport>, 2> servers;

  Impl(const std::filesystem::path& home, std::chrono::milliseconds timeout)
      : config(core::load_config(home)) {
    const transport::Timeouts timeouts{timeout, timeout};
    if (config.legacy) {
      servers[0] = transport::make_legacy_http_transport(config.https, timeouts);
      servers[1] = transport::make_legacy_tcp_transport(config.tcp, timeouts);
    } else {
      servers[0] = transport::make_https_transport(config.https, timeouts, config.identity);
      servers[1] = transport::make_tcp_transport(config.tcp, timeouts, config.identity);
    }
  }

  ServerProbe probe_one(std::size_t j) {
    transport::Transport& t = *servers[j];
    ServerProbe out{t.endpoint().kind,       t.endpoint().address(), false, {}, {},
                    t.endpoint().fingerprint};
    const auto start = Clock::now();
    try {
      const protocol::Reply reply = t.call(protocol::GetFileInfo{});
      const auto* error = std::get_if<protocol::ErrorReply>(&reply);
      if (error && error->status != protocol::Status::not_found) {
        out.error = "the server answered: " + error->message;
      } else {
        out.reachable = true;
      }
    } catch (const std::exception& e) {
      out.error = e.what();
    }
    out.latency = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    return out;
  }
};

ServerProber::ServerProber(const std::filesystem::path& home, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>(home, timeout)) {}

ServerProber::~ServerProber() = default;

std::vector<ServerProbe> ServerProber::probe() {
  auto https = std::async(std::launch::async, [this] { return impl_->probe_one(0); });
  ServerProbe tcp = impl_->probe_one(1);
  return {https.get(), std::move(tcp)};
}

}  // namespace splitfs::fs
