// The write-back file against a plain in-memory model: random writes (with holes), truncations,
// write-behind uploads, reads and commits; every read and every committed segment must match the
// model, and a commit must reuse exactly the base segments nothing touched.
#include <catch2/catch.hpp>
#include <filesystem>
#include <map>
#include <random>

#include "fs/writeback.hpp"

using namespace splitfs::fs;
using splitfs::Bytes;
using splitfs::ByteView;

namespace {

constexpr std::uint32_t kSegment = 4096;

struct Model {
  Bytes base;     // committed content
  Bytes content;  // what the file holds now
  // What "the servers" hold for staged segments, by the first byte of a fake ref.
  std::map<std::uint8_t, Bytes> uploads;
  std::uint8_t next_ref = 1;

  ByteView base_segment(std::uint64_t s) const {
    const std::size_t start = s * kSegment;
    if (start >= base.size())
      return {};
    return ByteView(base).subspan(start, std::min<std::size_t>(kSegment, base.size() - start));
  }
  ByteView uploaded(const splitfs::SegmentRef& ref) const { return uploads.at(ref.shares[0][0]); }
  // What fill() wants for segment s: the staged bytes, or the base segment.
  ByteView fill_bytes(const WriteBack& wb, std::uint64_t s) const {
    const auto* ref = wb.staged(s);
    return ref ? uploaded(*ref) : base_segment(s);
  }
  // Uploads the current bytes of a segment; returns its fake ref.
  splitfs::SegmentRef upload(const WriteBack& wb, std::uint64_t s) {
    splitfs::SegmentRef ref;
    ref.shares[0][0] = next_ref++;
    ref.length = static_cast<std::uint32_t>(wb.segment_length(s));
    Bytes bytes;
    wb.build(s, {}, bytes);
    uploads[ref.shares[0][0]] = bytes;
    return ref;
  }
};

Bytes read_through(const WriteBack& wb, const Model& m, std::uint64_t offset, std::uint64_t len) {
  Bytes out;
  for (const auto& span : wb.plan(offset, len)) {
    Bytes piece(span.length, 0);
    if (span.source == WriteBack::Source::local) {
      wb.read_local(span.offset, piece);
    } else if (span.source == WriteBack::Source::staged) {
      const auto seg = m.uploaded(*wb.staged(span.offset / kSegment));
      const std::size_t at = span.offset % kSegment;
      REQUIRE(at + span.length <= seg.size());
      std::copy_n(seg.begin() + static_cast<std::ptrdiff_t>(at), span.length, piece.begin());
    } else if (span.source == WriteBack::Source::base) {
      const auto seg = m.base_segment(span.offset / kSegment);
      const std::size_t at = span.offset % kSegment;
      REQUIRE(at + span.length <= seg.size());
      std::copy_n(seg.begin() + static_cast<std::ptrdiff_t>(at), span.length, piece.begin());
    }
    out.insert(out.end(), piece.begin(), piece.end());
  }
  return out;
}

void write(WriteBack& wb, Model& m, std::uint64_t offset, const Bytes& data) {
  for (const auto s : wb.base_needed(offset, data.size()))
    wb.fill(s, m.fill_bytes(wb, s));
  wb.write(offset, data);
  if (m.content.size() < offset + data.size())
    m.content.resize(offset + data.size(), 0);
  std::copy(data.begin(), data.end(), m.content.begin() + static_cast<std::ptrdiff_t>(offset));
}

// Checks every segment a commit would send or reuse; returns how many it would reuse.
std::size_t check_commit(const WriteBack& wb, const Model& m) {
  REQUIRE(wb.size() == m.content.size());
  std::size_t reused = 0;
  // One buffer for every segment, as the mount's readers use theirs: no stale byte may show.
  Bytes built(kSegment, 0xa5);
  for (std::uint64_t s = 0; s < wb.segment_count(); ++s) {
    const std::size_t start = s * kSegment;
    const Bytes expected(
        m.content.begin() + static_cast<std::ptrdiff_t>(start),
        m.content.begin() + static_cast<std::ptrdiff_t>(start + wb.segment_length(s)));
    if (const auto* ref = wb.staged(s)) {
      const auto seg = m.uploaded(*ref);
      REQUIRE(Bytes(seg.begin(), seg.end()) == expected);
    } else if (wb.reusable(s)) {
      const auto seg = m.base_segment(s);
      REQUIRE(Bytes(seg.begin(), seg.end()) == expected);
      ++reused;
    } else {
      wb.build(s, wb.build_needs_base(s) ? m.base_segment(s) : ByteView(), built);
      REQUIRE(built == expected);
    }
  }
  return reused;
}

}  // namespace

TEST_CASE("a small edit in a large file leaves every other segment reusable") {
  const auto dir = std::filesystem::temp_directory_path();
  Model m;
  m.base.assign(64 * kSegment + 100, 7);
  m.content = m.base;
  WriteBack wb(dir, kSegment, m.base.size());
  CHECK_FALSE(wb.dirty());
  write(wb, m, 10 * kSegment + 5, Bytes(3, 1));
  CHECK(wb.dirty());
  CHECK(wb.local_segments() == 1);
  CHECK(check_commit(wb, m) == 64);  // 65 segments, one rebuilt
  CHECK(read_through(wb, m, 10 * std::uint64_t{kSegment}, 10) ==
        Bytes(m.content.begin() + 10 * std::ptrdiff_t{kSegment},
              m.content.begin() + 10 * std::ptrdiff_t{kSegment} + 10));
}

TEST_CASE("truncating down and extending again reads zeros, not old bytes") {
  Model m;
  m.base.assign(3 * std::size_t{kSegment}, 9);
  m.content = m.base;
  WriteBack wb(std::filesystem::temp_directory_path(), kSegment, m.base.size());
  write(wb, m, 2 * kSegment + 10, Bytes(10, 5));
  wb.truncate(kSegment + 1);
  m.content.resize(kSegment + 1);
  wb.truncate(3 * std::uint64_t{kSegment});
  m.content.resize(3 * std::size_t{kSegment}, 0);
  CHECK(read_through(wb, m, 0, 3 * std::uint64_t{kSegment}) == m.content);
  CHECK(check_commit(wb, m) == 1);  // only segment 0 is still the base's
}

TEST_CASE("random writes, truncations and commits match the model") {
  // Keeping staged bytes for a malware check, which releases those it has read.
  const bool keep = GENERATE(false, true);
  const auto seed = std::random_device{}();
  INFO("seed " << seed << (keep ? ", staged bytes kept until checked" : ""));
  std::mt19937_64 rng(seed);
  Model m;
  m.base.resize(rng() % (8 * std::uint64_t{kSegment}));
  for (auto& b : m.base)
    b = static_cast<std::uint8_t>(rng());
  m.content = m.base;
  WriteBack wb(std::filesystem::temp_directory_path(), kSegment, m.base.size());
  wb.set_keep_staged(keep);
  for (int i = 0; i < 2000; ++i) {
    const std::uint64_t limit = 12 * std::uint64_t{kSegment};
    switch (rng() % 10) {
      case 0:
      case 1:
      case 2:
      case 3: {
        const std::uint64_t offset = rng() % limit;
        Bytes data(1 + rng() % (2 * std::uint64_t{kSegment}));
        for (auto& b : data)
          b = static_cast<std::uint8_t>(rng());
        write(wb, m, offset, data);
        break;
      }
      case 4: {
        const std::uint64_t size = rng() % limit;
        for (const auto s : wb.truncate_needs(size))
          wb.fill(s, m.fill_bytes(wb, s));
        wb.truncate(size);
        m.content.resize(size, 0);
        break;
      }
      case 8: {
        // Write-behind: upload some finished segments ahead of the commit; now and then one
        // changes between taking its bytes and recording the upload, which must be refused.
        for (const auto s : wb.stageable(0, wb.segment_count(), 1 + rng() % 4)) {
          const std::uint64_t version = wb.version(s);
          const auto ref = m.upload(wb, s);
          const bool meddle = rng() % 5 == 0;
          if (meddle)
            write(wb, m, s * kSegment + rng() % kSegment, Bytes(1, 0x5a));
          CHECK(wb.stage(s, version, ref) == !meddle);
        }
        break;
      }
      case 9:
        wb.release_checked(rng() % limit);
        break;
      case 5: {
        // Commit: the built content becomes the new base.
        check_commit(wb, m);
        m.base = m.content;
        wb.reset(m.base.size());
        break;
      }
      default: {
        const std::uint64_t offset = rng() % limit;
        const std::uint64_t len = rng() % (3 * std::uint64_t{kSegment});
        const std::uint64_t end = std::min<std::uint64_t>(offset + len, m.content.size());
        const Bytes expected = offset >= end
                                   ? Bytes()
                                   : Bytes(m.content.begin() + static_cast<std::ptrdiff_t>(offset),
                                           m.content.begin() + static_cast<std::ptrdiff_t>(end));
        REQUIRE(read_through(wb, m, offset, len) == expected);
      }
    }
    REQUIRE(wb.size() == m.content.size());
    // What may be staged: every whole local segment not staged yet, in order.
    std::vector<std::uint64_t> stageable;
    for (std::uint64_t s = 0; s < wb.segment_count(); ++s) {
      if (wb.is_local(s) && wb.staged(s) == nullptr && (s + 1) * kSegment <= wb.size())
        stageable.push_back(s);
    }
    REQUIRE(wb.stageable(0, wb.segment_count(), wb.segment_count() + 1) == stageable);
    REQUIRE(wb.unstaged_bytes() == (wb.local_segments() - wb.staged_segments()) * kSegment);
    // The local file holds the current bytes of the segments it says it holds, and counts them.
    std::uint64_t held = 0;
    for (std::uint64_t s = 0; s < wb.segment_count(); ++s) {
      if (!wb.holds(s))
        continue;
      REQUIRE(wb.is_local(s));
      Bytes built;
      wb.build(s, {}, built);
      REQUIRE(built == Bytes(m.content.begin() + static_cast<std::ptrdiff_t>(s * kSegment),
                             m.content.begin() +
                                 static_cast<std::ptrdiff_t>(s * kSegment + wb.segment_length(s))));
      held += wb.segment_length(s);
    }
    REQUIRE(wb.footprint() == held);
  }
  check_commit(wb, m);
}

TEST_CASE(
    "write-behind releases local bytes in whole blocks, kept for a malware check until read") {
  const bool keep = GENERATE(false, true);
  INFO((keep ? "kept until checked" : "released when staged"));
  constexpr std::uint64_t kBlock = WriteBack::kReleaseBlock;
  constexpr std::uint64_t kPer = kBlock / kSegment;
  Model m;
  WriteBack wb(std::filesystem::temp_directory_path(), kSegment, 0);
  wb.set_keep_staged(keep);
  Bytes data(4 * kBlock);
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<std::uint8_t>(i * 13 + i / 4096);
  write(wb, m, 0, data);
  const auto stage = [&](std::uint64_t first, std::uint64_t end) {
    for (std::uint64_t s = first; s < end; ++s)
      REQUIRE(wb.stage(s, wb.version(s), m.upload(wb, s)));
  };
  stage(0, kPer + kPer / 2);  // a block and a half
  if (keep) {
    CHECK(wb.footprint() == 4 * kBlock);
    CHECK(wb.local_bytes() == 4 * kBlock);
    wb.release_checked(kBlock + 100);  // the first block wholly read
    CHECK_FALSE(wb.holds(kPer - 1));
    CHECK(wb.holds(kPer));
    CHECK(wb.footprint() == 3 * kBlock);
  } else {
    CHECK(wb.footprint() == 2 * kBlock + kBlock / 2);
  }
  // The second block's staged half stays on disk while its other half is needed.
  CHECK(wb.local_bytes() == 3 * kBlock);
  stage(kPer + kPer / 2, 2 * kPer);
  CHECK(wb.local_bytes() == (keep ? 3 : 2) * kBlock);
  if (keep) {
    wb.release_checked(3 * kBlock);
    CHECK(wb.footprint() == 2 * kBlock);
    stage(2 * kPer, 3 * kPer);  // read already: released as it is staged
    CHECK(wb.footprint() == kBlock);
  }
  CHECK(wb.local_bytes() == (keep ? 1 : 2) * kBlock);
  CHECK(read_through(wb, m, 0, data.size()) == data);
  // Written again, a released segment is held again.
  write(wb, m, std::uint64_t{5} * kSegment, Bytes(kSegment, 9));
  CHECK(wb.holds(5));
  check_commit(wb, m);
  wb.reset(m.content.size());
  CHECK(wb.footprint() == 0);
  CHECK(wb.local_bytes() == 0);
}

TEST_CASE("write-behind: staged segments are read and committed from their refs") {
  Model m;
  WriteBack wb(std::filesystem::temp_directory_path(), kSegment, 0);
  Bytes data(5 * kSegment + 10);
  for (std::size_t i = 0; i < data.size(); ++i)
    data[i] = static_cast<std::uint8_t>(i * 7);
  write(wb, m, 0, data);
  const auto ready = wb.stageable(0, wb.segment_count(), 100);
  CHECK(ready == std::vector<std::uint64_t>{0, 1, 2, 3, 4});  // not the short last one
  // Past segments already on their way, within a bound and a count.
  CHECK(wb.stageable(2, wb.segment_count(), 100) == std::vector<std::uint64_t>{2, 3, 4});
  CHECK(wb.stageable(1, 4, 2) == std::vector<std::uint64_t>{1, 2});
  CHECK(wb.stageable(3, 3, 100).empty());
  for (const auto s : ready)
    CHECK(wb.stage(s, wb.version(s), m.upload(wb, s)));
  CHECK(wb.staged_segments() == 5);
  CHECK(wb.unstaged_bytes() == kSegment);
  CHECK(wb.footprint() == 10);  // only the short last segment's bytes count
  CHECK(read_through(wb, m, 0, data.size()) == data);
  // A partial write into a staged segment brings it back first.
  write(wb, m, 2 * kSegment + 100, Bytes(50, 1));
  CHECK(wb.staged(2) == nullptr);
  CHECK(wb.staged_segments() == 4);
  check_commit(wb, m);
  CHECK(read_through(wb, m, 0, m.content.size()) == m.content);
  // Cutting a staged segment needs it back too.
  CHECK(wb.truncate_needs(3 * kSegment + 5) == std::vector<std::uint64_t>{3});
  CHECK(wb.truncate_needs(3 * std::uint64_t{kSegment}).empty());
}

TEST_CASE("the bookkeeping's memory grows with the segments written and goes with a reset") {
  Model m;
  WriteBack wb(std::filesystem::temp_directory_path(), kSegment, 0);
  CHECK(wb.memory_bytes() == 0);
  write(wb, m, 0, Bytes(4 * std::size_t{kSegment}, 3));
  const std::uint64_t four = wb.memory_bytes();
  // Per segment at least the values it keeps: a segment number, and a number and version.
  CHECK(four >= 4 * (3 * sizeof(std::uint64_t)));
  write(wb, m, 4 * std::uint64_t{kSegment}, Bytes(4 * std::size_t{kSegment}, 4));
  CHECK(wb.memory_bytes() == 2 * four);
  for (const auto s : wb.stageable(0, wb.segment_count(), 100))
    CHECK(wb.stage(s, wb.version(s), m.upload(wb, s)));
  CHECK(wb.memory_bytes() > 2 * four);  // each staged segment now holds its ref too
  wb.reset(0);
  CHECK(wb.memory_bytes() == 0);
}
