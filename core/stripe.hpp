// Placement and striping: the one place that knows which server holds which chunk.
//
// A file is cut into 1024-byte chunks; chunk k (0-based) belongs to server k mod n (with n = 2:
// chunks 1, 3, 5, ... in the problem's 1-based numbering go to the HTTPS server, 2, 4, ... to the
// TCP server). For I/O, chunks are grouped into segments of a whole number of n-chunk rounds, so a
// segment always starts on server 0; a segment's share for server j is its chunks j, j+n, j+2n, ...
// in order. Striping a segment is n strided copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "common/bytes.hpp"

namespace splitfs::core {

inline constexpr std::size_t kChunkBytes = 1024;
inline constexpr std::size_t kServers = 2;
inline constexpr std::size_t kHttpsServer = 0;
inline constexpr std::size_t kTcpServer = 1;

// The server that holds chunk `chunk_index` (0-based) of a file.
constexpr std::size_t server_of_chunk(std::uint64_t chunk_index, std::size_t servers = kServers) {
  return static_cast<std::size_t>(chunk_index % servers);
}

// Chunks of a file of `size` bytes (a short last chunk counts; an empty file has none).
constexpr std::uint64_t chunk_count(std::uint64_t size) {
  return (size + kChunkBytes - 1) / kChunkBytes;
}

// Chunks among the first `chunks` of a file that server `server` holds.
constexpr std::uint64_t chunks_on_server(std::uint64_t chunks, std::size_t server,
                                         std::size_t servers = kServers) {
  return chunks / servers + (server < chunks % servers ? 1 : 0);
}

// Bytes of a segment of `segment_length` bytes that server `server` holds.
std::size_t share_length(std::size_t segment_length, std::size_t server,
                         std::size_t servers = kServers);

// Splits `segment` into one share per element of `shares` (resized to fit).
void stripe(ByteView segment, std::span<Bytes> shares);

// Reassembles a segment from its shares; each share must have exactly
// share_length(segment.size(), j) bytes.
void unstripe(std::span<const ByteView> shares, MutableByteView segment);
// The same into `segment`, which it makes `length` bytes long (without zero-filling it first).
void unstripe(std::span<const ByteView> shares, std::size_t length, Bytes& segment);

}  // namespace splitfs::core
