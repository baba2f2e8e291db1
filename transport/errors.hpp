// Internal to the transports: the wording of every failure they report, so both doors explain the
// same situation the same way ("<KIND> server at <host:port> ...") and the pin message always names
// both fingerprints.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"
#include "transport/transport.hpp"

namespace splitfs::transport::detail {

// The host without surrounding brackets, as resolvers and TLS name checks want it.
std::string strip_brackets(std::string_view host);

// Prefix of every message: "HTTPS server at 127.0.0.1:5000".
std::string server_label(std::string_view kind, std::string_view address);

[[noreturn]] void throw_unreachable(const std::string& kind, const std::string& address,
                                    std::string_view reason);
[[noreturn]] void throw_connect_timeout(const std::string& kind, const std::string& address,
                                        std::chrono::milliseconds timeout);
[[noreturn]] void throw_stalled(const std::string& kind, const std::string& address,
                                std::chrono::milliseconds idle);
[[noreturn]] void throw_connection_lost(const std::string& kind, const std::string& address,
                                        std::string_view detail);
[[noreturn]] void throw_pin_mismatch(std::string_view kind, std::string_view address,
                                     std::string_view presented, std::string_view expected);
[[noreturn]] void throw_reply_too_large(std::string_view kind, std::string_view address);
[[noreturn]] void throw_bad_reply(std::string_view kind, std::string_view address,
                                  std::string_view detail);
// Whether a TLS failure's text is the server refusing the client's certificate (a TLS alert).
bool refused_client_certificate(std::string_view detail);
[[noreturn]] void throw_client_certificate_refused(std::string_view kind, std::string_view address);

}  // namespace splitfs::transport::detail
