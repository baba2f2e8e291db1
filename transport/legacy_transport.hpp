// Transports for the problem statement's original servers, which can only store a named blob and
// hand it back (plain HTTP upload/download, and a raw TCP protocol of 1024-byte padded fields).
// They implement the same Transport interface as ours by mapping every protocol request onto those
// two operations, so the library above works unchanged.
//
// What lives on such a server (all names opaque, all content already encrypted by the client):
//   splitfs-s-<share id hex>      a share, immutable (its id is a keyed hash of its content)
//   splitfs-f-<file id hex>-a|b   a file's record: the encoded Commit, or a tombstone once removed
//   splitfs-catalog-a|b           the catalog: every live file's id, version and encrypted entry
// Each object is cut into pieces of at most kPieceBytes, stored as "<object>.<index>", because the
// original TCP server reads a body with a single recv() and cuts anything larger. Piece 0 starts
// with a header (magic, generation, length, SHA-256 of the content) and is written last, so an
// object whose piece 0 is readable was written whole; a read reassembles the pieces and checks
// every length and the digest. Records and the catalog change, so they alternate between two
// slots (a, b): a write goes to the slot not holding the current version and carries a higher
// generation, and a reader takes the newest slot that checks out. An interrupted write therefore
// leaves the previous version readable.
//
// What does not hold against these servers: no TLS (traffic in the clear), no authentication, no
// delete (remove writes a tombstone and drops the catalog entry; the encrypted shares stay), object
// sizes are visible, and the catalog is updated by read-modify-write, so two clients writing at
// once can lose each other's catalog entries. Content stays encrypted and authenticated by the
// client, so altered data is still detected on fetch.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/bytes.hpp"
#include "transport/transport.hpp"

namespace splitfs::transport {

// Endpoints carry no fingerprint: there is no TLS to pin.
std::unique_ptr<Transport> make_legacy_http_transport(const Endpoint& endpoint,
                                                      const Timeouts& timeouts);
std::unique_ptr<Transport> make_legacy_tcp_transport(const Endpoint& endpoint,
                                                     const Timeouts& timeouts);

namespace legacy {

// The largest piece sent in one upload, on both servers: small enough that the original TCP
// server's single recv() receives it whole on any ordinary connection.
inline constexpr std::size_t kPieceBytes = 4096;
// Bytes of the header at the start of piece 0.
inline constexpr std::size_t kHeaderBytes = 56;
// The largest object read back (a record holding the largest manifest, or the catalog).
inline constexpr std::size_t kMaxObjectBytes = 256u << 20;

std::string share_object(const Id& share);
std::string record_object(const Id& file, int slot);  // slot 0 ("a") or 1 ("b")
std::string catalog_object(int slot);
std::string piece_name(std::string_view object, std::size_t index);

struct ObjectHeader {
  std::uint64_t generation = 0;  // 0 for shares; grows with every write of a record or catalog
  std::uint64_t length = 0;      // content bytes, header excluded
  std::array<std::uint8_t, 32> digest{};  // SHA-256 of the content
};

// Header followed by the content: what is cut into pieces.
Bytes seal_object(ByteView content, std::uint64_t generation);
// Number of pieces of an object of `length` content bytes.
std::size_t piece_count(std::uint64_t length);
// The header at the start of piece 0; nullopt if it is not one (or announces an oversized object).
std::optional<ObjectHeader> read_header(ByteView piece0);
// The content of a whole sealed object (all pieces concatenated), if its length and digest check.
std::optional<Bytes> open_object(ByteView sealed);

}  // namespace legacy
}  // namespace splitfs::transport
