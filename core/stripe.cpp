#include "core/stripe.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>

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

void stripe(ByteView segment, std::span<Bytes> shares) {
  const std::size_t servers = shares.size();
  assert(servers > 0);
  for (std::size_t j = 0; j < servers; ++j)
    shares[j].resize(share_length(segment.size(), j, servers));
  std::vector<std::size_t> filled(servers, 0);
  for (std::size_t offset = 0, chunk = 0; offset < segment.size(); offset += kChunkBytes, ++chunk) {
    const std::size_t j = server_of_chunk(chunk, servers);
    const std::size_t n = std::min(kChunkBytes, segment.size() - offset);
    std::memcpy(shares[j].data() + filled[j], segment.data() + offset, n);
    filled[j] += n;
  }
}

void unstripe(std::span<const ByteView> shares, MutableByteView segment) {
  const std::size_t servers = shares.size();
  assert(servers > 0);
  std::vector<std::size_t> taken(servers, 0);
  for (std::size_t offset = 0, chunk = 0; offset < segment.size(); offset += kChunkBytes, ++chunk) {
    const std::size_t j = server_of_chunk(chunk, servers);
    const std::size_t n = std::min(kChunkBytes, segment.size() - offset);
    assert(taken[j] + n <= shares[j].size());
    std::memcpy(segment.data() + offset, shares[j].data() + taken[j], n);
    taken[j] += n;
  }
}

}  // namespace splitfs::core
