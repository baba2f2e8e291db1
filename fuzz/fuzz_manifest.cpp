// libFuzzer target: the decoders of a file's manifest and listing entry (what a client reads after
// decrypting a server's record). What decodes must satisfy the layout checks and re-encode to the
// same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/manifest.hpp"

namespace {

using namespace splitfs;
using namespace splitfs::core;

void check(bool holds) {
  if (!holds)
    std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView input(data, size);
  Manifest manifest;
  if (!decode_manifest(input, manifest)) {
    check(manifest.segment_bytes > 0);
    check(manifest.shares.size() == manifest.segment_count() * manifest.servers);
    for (std::uint64_t s = 0; s < manifest.segment_count(); ++s)
      check(manifest.segment_length(s) <= manifest.segment_bytes);
    Manifest again;
    check(!decode_manifest(encode_manifest(manifest), again));
    check(again == manifest);
  }
  Entry entry;
  if (!decode_entry(input, entry)) {
    Entry again;
    check(!decode_entry(encode_entry(entry), again));
    check(again == entry);
  }
  return 0;
}
