// A stored file's manifest and entry, and their encoding (sans-I/O, pure functions).
//
// The manifest says everything needed to rebuild one version of a file: its name and attributes,
// the segment layout and, for every segment, the id of its share on each server (the all-zero id
// marks an empty share, which is never stored). The entry is the small subset a listing shows.
// Both are encrypted by the client (crypto.hpp) before a server sees them.
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

#include "common/bytes.hpp"
#include "core/stripe.hpp"

namespace splitfs::core {

inline constexpr std::size_t kMaxNameBytes = 4096;
// 128 KiB: the largest size at which 100 scattered 1-byte edits of a 1 GiB file add under 1% (each
// edit costs one 64 KiB share); 64 KiB doubles the shares, index rows and manifest per byte for
// little gain (bench/storage_figures.sh). Files that compress well use kMaxSegmentBytes instead.
inline constexpr std::uint32_t kDefaultSegmentBytes = 128u << 10;
inline constexpr std::uint32_t kMaxSegmentBytes = 4u << 20;

struct Entry {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t version = 0;
  std::int64_t stored_at_ns = 0;  // when this version was stored (client clock, Unix epoch)
  std::int64_t mtime_ns = 0;      // the source file's modification time
  std::uint32_t mode = 0644;
  friend bool operator==(const Entry&, const Entry&) = default;
};

struct Manifest {
  Entry entry;
  std::uint32_t segment_bytes = kDefaultSegmentBytes;
  std::uint32_t servers = kServers;
  // Segment-major: the share of segment s on server j is shares[s * servers + j].
  std::vector<Id> shares;
  friend bool operator==(const Manifest&, const Manifest&) = default;

  std::uint64_t segment_count() const {
    return entry.size / segment_bytes + (entry.size % segment_bytes != 0 ? 1 : 0);
  }
  // Length of segment s (the last one may be short).
  std::size_t segment_length(std::uint64_t s) const;
};

inline constexpr Id kEmptyShare{};

enum class ManifestErrc { malformed = 1, unsupported_format, inconsistent };
const std::error_category& manifest_category();
std::error_code make_error_code(ManifestErrc e);

Bytes encode_entry(const Entry& entry);
std::error_code decode_entry(ByteView bytes, Entry& out);
Bytes encode_manifest(const Manifest& manifest);
// Also checks the layout: segment size a positive multiple of a chunk round, within bounds, and
// exactly one share id per segment and server.
std::error_code decode_manifest(ByteView bytes, Manifest& out);

}  // namespace splitfs::core

template <>
struct std::is_error_code_enum<splitfs::core::ManifestErrc> : std::true_type {};
