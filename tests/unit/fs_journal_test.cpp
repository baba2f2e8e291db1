// The write-back journal without a mount: records round-trip and reject damage, a frozen
// write-back file is never changed again (a change copies it), a journaled state resumes in a new
// WriteBack with the same content, and orphaned folders are claimed once, by one journal.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "fs/journal.hpp"
#include "fs/writeback.hpp"

using namespace splitfs::fs;
using splitfs::Bytes;
using splitfs::ByteView;

namespace {

constexpr std::uint32_t kSegment = 4096;

struct Scratch {
  Scratch() {
    std::string pattern = (std::filesystem::temp_directory_path() / "fs-journal-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path path;
};

Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes out(n);
  for (auto& b : out)
    b = static_cast<std::uint8_t>(rng());
  return out;
}

Bytes content(const WriteBack& wb) {
  Bytes out;
  for (std::uint64_t s = 0; s < wb.segment_count(); ++s) {
    Bytes segment;
    wb.build(s, {}, segment);
    out.insert(out.end(), segment.begin(), segment.end());
  }
  return out;
}

JournalFile sample_file() {
  JournalFile f;
  f.ino = 42;
  f.sequence = 7;
  f.data_name = "wb-abcdef";
  f.segment_bytes = kSegment;
  f.bytes = 12345;
  f.base_version = 3;
  f.base_size = 9000;
  f.base_segment_bytes = kSegment;
  for (int i = 0; i < 3; ++i) {
    splitfs::SegmentRef ref;
    ref.shares[0][0] = static_cast<std::uint8_t>(i + 1);
    ref.shares[1][31] = static_cast<std::uint8_t>(i + 9);
    ref.length = i == 2 ? 808 : kSegment;
    f.base_segments.push_back(ref);
  }
  f.mode = 0640;
  f.mtime_ns = 1'700'000'000'123'456'789;
  f.state.base_size = 9000;
  f.state.valid_base = 8000;
  f.state.size = 20000;
  f.state.local = {0, 4};
  f.state.staged[4] = f.base_segments[1];
  f.state.dirty = true;
  return f;
}

}  // namespace

TEST_CASE("journal records round-trip and reject damage", "[fs][journal]") {
  const JournalFile f = sample_file();
  const Bytes bytes = encode_journal_file(f);
  JournalFile back;
  REQUIRE(decode_journal_file(bytes, back));
  CHECK(back == f);
  for (std::size_t cut = 0; cut < bytes.size(); cut += 7) {
    JournalFile partial;
    CHECK_FALSE(decode_journal_file(ByteView(bytes.data(), cut), partial));
  }
  Bytes longer = bytes;
  longer.push_back(0);
  CHECK_FALSE(decode_journal_file(longer, back));
  JournalFile unsafe = f;
  unsafe.data_name = "../escape";
  CHECK_FALSE(decode_journal_file(encode_journal_file(unsafe), back));

  JournalTree tree;
  tree.base_version = 5;
  tree.base = make_empty_tree(0755, 1, 2, 3);
  tree.local = tree.base;
  tree.local.inodes[kRootIno].entries["a"] = 2;
  tree.local.inodes[2].mode = 0100644;
  tree.local.next_ino = 3;
  JournalTree tree_back;
  REQUIRE(decode_journal_tree(encode_journal_tree(tree), tree_back));
  CHECK(tree_back == tree);
  Bytes damaged = encode_journal_tree(tree);
  damaged[0] ^= 1;
  CHECK_FALSE(decode_journal_tree(damaged, tree_back));
}

TEST_CASE("a frozen write-back file stays as journaled; a resumed state has the same content",
          "[fs][journal]") {
  Scratch dir;
  WriteBack wb(dir.path, kSegment, 0);
  const Bytes first = random_bytes(3 * kSegment + 100, 1);
  wb.write(0, first);
  const WriteBack::State state = wb.state();
  const std::string name = wb.freeze();
  CHECK(wb.frozen());
  CHECK(wb.footprint() == first.size());
  std::ifstream frozen_in(dir.path / name, std::ios::binary);
  const Bytes frozen_bytes{std::istreambuf_iterator<char>(frozen_in),
                           std::istreambuf_iterator<char>()};

  // Changes after the freeze go to a fresh file; the frozen one is untouched.
  const Bytes patch = random_bytes(50, 2);
  wb.write(kSegment + 10, patch);
  wb.truncate(2 * kSegment + 5);
  CHECK_FALSE(wb.frozen());
  CHECK(wb.file_name() != name);
  std::ifstream again(dir.path / name, std::ios::binary);
  const Bytes still{std::istreambuf_iterator<char>(again), std::istreambuf_iterator<char>()};
  CHECK(still == frozen_bytes);
  Bytes expected = first;
  std::copy(patch.begin(), patch.end(), expected.begin() + kSegment + 10);
  expected.resize(2 * kSegment + 5);
  CHECK(content(wb) == expected);

  // Another process resumes the journaled state over the frozen file.
  WriteBack resumed(dir.path, kSegment, state, name);
  CHECK(resumed.frozen());
  CHECK(resumed.size() == first.size());
  CHECK(content(resumed) == first);
  // Its first change copies, and leaves the journaled file as it was.
  resumed.write(0, patch);
  CHECK(resumed.file_name() != name);
  std::ifstream third(dir.path / name, std::ios::binary);
  CHECK(Bytes{std::istreambuf_iterator<char>(third), std::istreambuf_iterator<char>()} ==
        frozen_bytes);

  // A state that does not fit is refused.
  WriteBack::State bad = state;
  bad.local.insert(1000);
  CHECK_THROWS_AS(WriteBack(dir.path, kSegment, bad, name), WriteBackError);
  CHECK_THROWS_AS(WriteBack(dir.path, kSegment, state, "../x"), WriteBackError);
}

TEST_CASE("growth() predicts what a write adds to the footprint", "[fs][journal]") {
  Scratch dir;
  std::mt19937 rng(99);
  WriteBack wb(dir.path, kSegment, 0);
  for (int i = 0; i < 500; ++i) {
    const std::uint64_t offset = rng() % (16 * kSegment);
    const std::size_t length = 1 + rng() % (3 * kSegment);
    const std::uint64_t before = wb.footprint();
    const std::uint64_t predicted = wb.growth(offset, length);
    wb.write(offset, random_bytes(length, static_cast<std::uint32_t>(i)));
    INFO("write " << i << " at " << offset << " of " << length);
    CHECK(wb.footprint() - before == predicted);
    if (i % 50 == 49)
      wb.truncate(rng() % (8 * kSegment));
  }
}

TEST_CASE("journal folders: records persist, orphans are claimed by one journal only",
          "[fs][journal]") {
  Scratch root;
  std::filesystem::path orphan_dir;
  {
    Journal first(root.path);
    orphan_dir = first.dir();
    std::ofstream(first.dir() / "wb-data") << "journaled bytes";
    JournalFile f = sample_file();
    f.data_name = "wb-data";
    CHECK(first.put_file(f) == 0);
    JournalTree tree;
    tree.base = make_empty_tree(0755, 0, 0, 0);
    tree.local = tree.base;
    first.put_tree(tree);
    CHECK(first.file_count() == 1);
    CHECK(first.bytes() == f.bytes);
    // A running mount's folder is not an orphan.
    Journal other(root.path);
    CHECK(other.claim_orphans().empty());
  }
  // The first mount ended with a record pending: its folder stays, and is summarized.
  const JournalSummary summary = summarize_journal(root.path);
  CHECK(summary.files == 1);
  CHECK(summary.tree);
  REQUIRE(summary.dirs.size() == 1);

  Journal next(root.path);
  Journal bystander(root.path);
  auto orphans = next.claim_orphans();
  REQUIRE(orphans.size() == 1);
  CHECK(bystander.claim_orphans().empty());  // claimed already
  REQUIRE(orphans[0].files.size() == 1);
  CHECK(orphans[0].files[0].ino == 42);
  CHECK(orphans[0].tree.has_value());
  CHECK(orphans[0].problems.empty());
  const std::string mine = next.adopt_data(orphans[0], "wb-data");
  JournalFile adopted = orphans[0].files[0];
  adopted.data_name = mine;
  next.put_file(adopted);
  next.release_orphan(orphans[0]);
  CHECK_FALSE(std::filesystem::exists(orphans[0].dir));
  std::ifstream in(next.dir() / mine);
  std::string text;
  std::getline(in, text);
  CHECK(text == "journaled bytes");

  // Dropping checks the sequence: a newer record of the same file stays.
  CHECK(next.drop_file(42, adopted.sequence + 1) == 0);
  CHECK(next.drop_file(42, adopted.sequence) == adopted.bytes);
  CHECK_FALSE(std::filesystem::exists(next.dir() / mine));
  CHECK(next.file_count() == 0);
}
