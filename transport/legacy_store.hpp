// Internal to the legacy transports: the two operations an original server offers (store a named
// piece, fetch it back), one implementation per protocol, and the transport that maps protocol
// requests onto them (legacy_transport.cpp). Every call is bounded by the endpoint's timeouts.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/bytes.hpp"
#include "transport/transport.hpp"

namespace splitfs::transport::legacy {

class PieceStore {
 public:
  virtual ~PieceStore() = default;
  // Stores `data` (1 to kPieceBytes bytes) under `name`, replacing what was there; returns once the
  // server holds it. Names are made of [a-z0-9.-] only. Throws ServerUnavailable or ServerError.
  virtual void put(const std::string& name, ByteView data) = 0;
  // The bytes stored under `name`, nullopt if the server has none. A reply larger than kPieceBytes
  // is a ServerError.
  virtual std::optional<Bytes> get(const std::string& name) = 0;
  virtual const Endpoint& endpoint() const = 0;
};

// POST /upload (multipart field "file", the filename is the name) and GET /download/<name>.
std::unique_ptr<PieceStore> make_http_piece_store(const Endpoint& endpoint,
                                                  const Timeouts& timeouts);
// One connection per operation; fields padded with spaces to 1024 bytes. Uploads are read back
// and compared (the protocol has no acknowledgement and the server may cut a body), and retried.
std::unique_ptr<PieceStore> make_tcp_piece_store(const Endpoint& endpoint,
                                                 const Timeouts& timeouts);

std::unique_ptr<Transport> make_legacy_transport(std::unique_ptr<PieceStore> store);

}  // namespace splitfs::transport::legacy
