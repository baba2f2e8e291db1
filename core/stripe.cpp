#include "core/stripe.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

namespace splitfs::core {

std::size_t share_length(std::size_t segment_length, std::size_t server, std::size_t servers) {
  const std::size_t full_chunks = segment_length / kChunkBytes;
  const std::size_t tail = segment_length % kChunkBytes;
  std::size_t length = chunks_on_server(full_chunks, server, servers) * kChunkBytes;
  // The short last chunk has index full_chunks.
  if (tail != 0 && server_of_chunk(full_chunks, servers) == server)
    length += tail;
  return length;
}

namespace {

// Calls piece(server, offset in the segment, offset in that server's share, bytes) for each chunk
// of a segment of `length` bytes, in order.
template <class Piece>
void for_each_chunk(std::size_t length, std::size_t servers, Piece piece) {
  assert(servers > 0);
  std::vector<std::size_t> filled(servers, 0);
  for (std::size_t offset = 0, chunk = 0; offset < length; offset += kChunkBytes, ++chunk) {
    const std::size_t j = server_of_chunk(chunk, servers);
    const std::size_t n = std::min(kChunkBytes, length - offset);
    piece(j, offset, filled[j], n);
    filled[j] += n;
  }
}

}  // namespace

void stripe(ByteView segment, std::span<Bytes> shares) {
  for (std::size_t j = 0; j < shares.size(); ++j) {
    shares[j].clear();
    shares[j].reserve(share_length(segment.size(), j, shares.size()));
  }
  // Appended, not copied over a resized buffer: a fresh share is not zero-filled first.
  for_each_chunk(segment.size(), shares.size(),
                 [&](std::size_t j, std::size_t offset, std::size_t, std::size_t n) {
                   const auto from = segment.begin() + static_cast<std::ptrdiff_t>(offset);
                   shares[j].insert(shares[j].end(), from, from + static_cast<std::ptrdiff_t>(n));
                 });
}

void unstripe(std::span<const ByteView> shares, MutableByteView segment) {
  for_each_chunk(segment.size(), shares.size(),
                 [&](std::size_t j, std::size_t offset, std::size_t taken, std::size_t n) {
                   assert(taken + n <= shares[j].size());
                   std::memcpy(segment.data() + offset, shares[j].data() + taken, n);
                 });
}

void unstripe(std::span<const ByteView> shares, std::size_t length, Bytes& segment) {
  segment.clear();
  segment.reserve(length);
  for_each_chunk(length, shares.size(),
                 [&](std::size_t j, std::size_t, std::size_t taken, std::size_t n) {
                   assert(taken + n <= shares[j].size());
                   const auto from = shares[j].begin() + static_cast<std::ptrdiff_t>(taken);
                   segment.insert(segment.end(), from, from + static_cast<std::ptrdiff_t>(n));
                 });
}

}  // namespace splitfs::core
