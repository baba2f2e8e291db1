// libFuzzer target: opening a share with a fixed key, as a client opens what a server sends. The
// first input byte picks the mode: even, the rest is an id (32 bytes) and a blob from a hostile
// server (the seeds include real shares, so the successful path is covered too); odd, the rest is
// an encoding byte and a body sealed with the key, so the decoding behind authentication (zstd
// frames) is fuzzed too. Whatever opens must stay within its size bound and hash back to its id.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/crypto.hpp"

namespace {

using namespace splitfs;
using namespace splitfs::core;

constexpr std::size_t kMaxPlain = 1u << 20;

void check(bool holds) {
  if (!holds)
    std::abort();
}

const KeySet& keys() {
  static const KeySet set = [] {
    Key key{};
    for (std::size_t i = 0; i < key.size(); ++i)
      key[i] = static_cast<std::uint8_t>(i * 7 + 1);
    return KeySet::derive(key);
  }();
  return set;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2)
    return 0;
  const ByteView input(data + 1, size - 1);
  Bytes plain;
  if (data[0] % 2 == 0) {
    Id id{};
    const std::size_t id_bytes = std::min(id.size(), input.size());
    std::copy_n(input.begin(), id_bytes, id.begin());
    // Only a seed sealed with the key opens (a server cannot forge one); it must then hold up.
    if (open_share(keys(), id, input.subspan(id_bytes), plain, kMaxPlain))
      check(plain.size() <= kMaxPlain);
    return 0;
  }
  const ByteView body = input.subspan(1);
  const Id id = share_id(keys(), body);
  const Bytes blob = seal_encoded_share_for_testing(keys(), id, input[0], body);
  if (open_share(keys(), id, blob, plain, kMaxPlain)) {
    check(plain.size() <= kMaxPlain);
    check(share_id(keys(), plain) == id || input[0] != 0);
  }
  return 0;
}
