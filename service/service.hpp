// The server's request handler, shared by both doors: maps each protocol request onto the store and
// each store outcome onto a protocol reply. Never throws; a failure becomes an ErrorReply whose
// text is short and reveals no internals (no paths, no SQL, no system error strings).
#pragma once

#include <string_view>

#include "protocol/messages.hpp"
#include "store/store.hpp"

namespace splitfs::service {

// Every request acts for this user until clients authenticate.
inline constexpr std::string_view kDefaultUser = "local";

class Service {
 public:
  explicit Service(store::Store& store) : store_(store) {}

  // Safe to call from several threads at once (the store is).
  protocol::Reply handle(std::string_view user, const protocol::Request& request);

 private:
  store::Store& store_;
};

// The reply for a request that could not be decoded.
protocol::ErrorReply decode_failure(std::error_code error);

}  // namespace splitfs::service
