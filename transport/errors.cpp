#include "transport/errors.hpp"

#include <splitfs/errors.hpp>

namespace splitfs::transport::detail {

std::string strip_brackets(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::string(host);
}

std::string server_label(std::string_view kind, std::string_view address) {
  return std::string(kind) + " server at " + std::string(address);
}

void throw_unreachable(const std::string& kind, const std::string& address,
                       std::string_view reason) {
  throw ServerUnavailable(kind, address,
                          server_label(kind, address) + " is not reachable (" +
                              std::string(reason) + ") - is it started?");
}

void throw_connect_timeout(const std::string& kind, const std::string& address,
                           std::chrono::milliseconds timeout) {
  throw ServerUnavailable(kind, address,
                          server_label(kind, address) + " did not answer within " +
                              std::to_string(timeout.count()) +
                              " ms - is it started and reachable?");
}

void throw_stalled(const std::string& kind, const std::string& address,
                   std::chrono::milliseconds idle) {
  throw ServerUnavailable(kind, address,
                          server_label(kind, address) + " stopped responding (nothing moved for " +
                              std::to_string(idle.count()) + " ms)");
}

void throw_connection_lost(const std::string& kind, const std::string& address,
                           std::string_view detail) {
  throw ServerUnavailable(
      kind, address,
      server_label(kind, address) + " dropped the connection (" + std::string(detail) + ")");
}

void throw_pin_mismatch(std::string_view kind, std::string_view address, std::string_view presented,
                        std::string_view expected) {
  throw AuthError(server_label(kind, address) + " presented certificate " + std::string(presented) +
                  " but " + std::string(expected) +
                  " is pinned; if the server was re-created, run splitfs init again");
}

void throw_reply_too_large(std::string_view kind, std::string_view address) {
  throw ServerError(server_label(kind, address) + " sent a reply larger than " +
                    std::to_string(protocol::kMaxMessageBytes) + " bytes");
}

bool refused_client_certificate(std::string_view detail) {
  return detail.find("alert certificate required") != std::string_view::npos ||
         detail.find("alert bad certificate") != std::string_view::npos;
}

void throw_client_certificate_refused(std::string_view kind, std::string_view address) {
  throw AuthError(server_label(kind, address) +
                  " refused the connection because this client presented no usable certificate; "
                  "run 'splitfs id' to create this client's identity and have it enrolled");
}

void throw_bad_reply(std::string_view kind, std::string_view address, std::string_view detail) {
  throw ServerError(server_label(kind, address) + " sent a reply that could not be read (" +
                    std::string(detail) + ")");
}

}  // namespace splitfs::transport::detail
