#include "core/manifest.hpp"

#include <algorithm>

#include "common/wire.hpp"

namespace splitfs::core {

namespace {

constexpr std::uint8_t kEntryFormat = 1;
constexpr std::uint8_t kManifestFormat = 1;
constexpr std::size_t kMaxServers = 16;

class ManifestCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "splitfs.manifest"; }
  std::string message(int ev) const override {
    switch (static_cast<ManifestErrc>(ev)) {
      case ManifestErrc::malformed:
        return "manifest is malformed";
      case ManifestErrc::unsupported_format:
        return "manifest format is not supported";
      case ManifestErrc::inconsistent:
        return "manifest layout is inconsistent";
    }
    return "unknown manifest error";
  }
};

void write_entry(wire::Writer& w, const Entry& e) {
  w.text(e.name);
  w.u64(e.size);
  w.u64(e.version);
  w.u64(static_cast<std::uint64_t>(e.stored_at_ns));
  w.u64(static_cast<std::uint64_t>(e.mtime_ns));
  w.u32(e.mode);
}

// The leading format byte: unsupported_format if it names another format, malformed if absent.
std::error_code read_format(wire::Reader& r, std::uint8_t format) {
  if (r.u8() == format)
    return {};
  return r.failure() == wire::Reader::Failure::none ? ManifestErrc::unsupported_format
                                                    : ManifestErrc::malformed;
}

void read_entry(wire::Reader& r, Entry& e) {
  e.name = r.text(kMaxNameBytes);
  e.size = r.u64();
  e.version = r.u64();
  e.stored_at_ns = static_cast<std::int64_t>(r.u64());
  e.mtime_ns = static_cast<std::int64_t>(r.u64());
  e.mode = r.u32();
}

}  // namespace

const std::error_category& manifest_category() {
  static const ManifestCategory category;
  return category;
}

std::error_code make_error_code(ManifestErrc e) {
  return {static_cast<int>(e), manifest_category()};
}

std::size_t Manifest::segment_length(std::uint64_t s) const {
  const std::uint64_t start = s * segment_bytes;
  return static_cast<std::size_t>(std::min<std::uint64_t>(segment_bytes, entry.size - start));
}

Bytes encode_entry(const Entry& entry) {
  Bytes out;
  wire::Writer w(out);
  w.u8(kEntryFormat);
  write_entry(w, entry);
  return out;
}

std::error_code decode_entry(ByteView bytes, Entry& out) {
  wire::Reader r(bytes);
  if (auto ec = read_format(r, kEntryFormat))
    return ec;
  read_entry(r, out);
  return r.done() ? std::error_code{} : make_error_code(ManifestErrc::malformed);
}

Bytes encode_manifest(const Manifest& manifest) {
  Bytes out;
  out.reserve(64 + manifest.entry.name.size() + manifest.shares.size() * sizeof(Id));
  wire::Writer w(out);
  w.u8(kManifestFormat);
  write_entry(w, manifest.entry);
  w.u32(manifest.segment_bytes);
  w.u32(manifest.servers);
  w.ids(manifest.shares);
  return out;
}

std::error_code decode_manifest(ByteView bytes, Manifest& out) {
  wire::Reader r(bytes);
  if (auto ec = read_format(r, kManifestFormat))
    return ec;
  Manifest m;
  read_entry(r, m.entry);
  m.segment_bytes = r.u32();
  m.servers = r.u32();
  m.shares = r.ids(bytes.size() / sizeof(Id));
  if (!r.done())
    return ManifestErrc::malformed;
  if (m.servers == 0 || m.servers > kMaxServers || m.segment_bytes == 0 ||
      m.segment_bytes > kMaxSegmentBytes || m.segment_bytes % (kChunkBytes * m.servers) != 0 ||
      m.shares.size() != m.segment_count() * m.servers) {
    return ManifestErrc::inconsistent;
  }
  out = std::move(m);
  return {};
}

}  // namespace splitfs::core
