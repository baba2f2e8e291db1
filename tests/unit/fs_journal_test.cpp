// The write-back journal without a mount: records round-trip and reject damage, a frozen
// write-back file is never changed again (a change copies it), a journaled state resumes in a new
// WriteBack with the same content, and orphaned folders are claimed once, by one journal.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "fs/journal.hpp"
#include "fs/writeback.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/temp_dir.hpp"

using namespace splitfs::fs;
using splitfs::Bytes;
using splitfs::ByteView;
using splitfs::testing::random_bytes;
using splitfs::testing::read_bytes;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;

namespace {

constexpr std::uint32_t kSegment = 4096;

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
  TempDir dir("fs-journal");
  WriteBack wb(dir.path(), kSegment, 0);
  const Bytes first = random_bytes(3 * kSegment + 100, 1);
  wb.write(0, first);
  const WriteBack::State state = wb.state();
  const std::string name = wb.freeze();
  CHECK(wb.frozen());
  CHECK(wb.footprint() == first.size());
  const Bytes frozen_bytes = read_bytes(dir / name);

  // Changes after the freeze go to a fresh file; the frozen one is untouched.
  const Bytes patch = random_bytes(50, 2);
  wb.write(kSegment + 10, patch);
  wb.truncate(2 * kSegment + 5);
  CHECK_FALSE(wb.frozen());
  CHECK(wb.file_name() != name);
  CHECK(read_bytes(dir / name) == frozen_bytes);
  Bytes expected = first;
  std::copy(patch.begin(), patch.end(), expected.begin() + kSegment + 10);
  expected.resize(2 * kSegment + 5);
  CHECK(content(wb) == expected);

  // Another process resumes the journaled state over the frozen file.
  WriteBack resumed(dir.path(), kSegment, state, name);
  CHECK(resumed.frozen());
  CHECK(resumed.size() == first.size());
  CHECK(content(resumed) == first);
  // Its first change copies, and leaves the journaled file as it was.
  resumed.write(0, patch);
  CHECK(resumed.file_name() != name);
  CHECK(read_bytes(dir / name) == frozen_bytes);

  // A state that does not fit is refused.
  WriteBack::State bad = state;
  bad.local.insert(1000);
  CHECK_THROWS_AS(WriteBack(dir.path(), kSegment, bad, name), WriteBackError);
  CHECK_THROWS_AS(WriteBack(dir.path(), kSegment, state, "../x"), WriteBackError);
}

TEST_CASE("growth() predicts what a write adds to the footprint", "[fs][journal]") {
  TempDir dir("fs-journal");
  std::mt19937 rng(99);
  WriteBack wb(dir.path(), kSegment, 0);
  for (int i = 0; i < 500; ++i) {
    const std::uint64_t offset = rng() % (16 * std::uint64_t{kSegment});
    const std::size_t length = 1 + rng() % (3 * std::size_t{kSegment});
    const std::uint64_t before = wb.footprint();
    const std::uint64_t predicted = wb.growth(offset, length);
    wb.write(offset, random_bytes(length, static_cast<std::uint32_t>(i)));
    INFO("write " << i << " at " << offset << " of " << length);
    CHECK(wb.footprint() - before == predicted);
    if (i % 50 == 49)
      wb.truncate(rng() % (8 * std::uint64_t{kSegment}));
  }
}

TEST_CASE("journal folders: records persist, orphans are claimed by one journal only",
          "[fs][journal]") {
  TempDir root("fs-journal");
  std::filesystem::path orphan_dir;
  {
    Journal first(root.path());
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
    Journal other(root.path());
    CHECK(other.claim_orphans().empty());
  }
  // The first mount ended with a record pending: its folder stays, and is summarized.
  const JournalSummary summary = summarize_journal(root.path());
  CHECK(summary.files == 1);
  CHECK(summary.tree);
  REQUIRE(summary.dirs.size() == 1);

  Journal next(root.path());
  Journal bystander(root.path());
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
  CHECK_FALSE(std::filesystem::exists(next.dir() / "f-42.rec"));
  CHECK(next.file_count() == 0);
  // The small data file goes at the next sweep; the record's file waits as a spare, and the next
  // record reuses it.
  CHECK(std::filesystem::exists(next.dir() / mine));
  next.sweep();
  CHECK_FALSE(std::filesystem::exists(next.dir() / mine));
  CHECK(std::filesystem::exists(next.dir() / "spare-0"));
  CHECK(summarize_journal(next.dir()).files == 0);
  std::ofstream(next.dir() / "wb-next") << "next bytes";
  JournalFile again = sample_file();
  again.ino = 43;
  again.data_name = "wb-next";
  CHECK(next.put_file(again) == 0);
  CHECK(next.drop_file(43, again.sequence) == again.bytes);
  const auto spares = [&] {
    std::size_t n = 0;
    for (const auto& entry : std::filesystem::directory_iterator(next.dir()))
      n += entry.path().filename().string().starts_with("spare-") ? 1 : 0;
    return n;
  };
  CHECK(spares() == 2);
  JournalFile lazy = again;
  lazy.sequence += 1;
  const int data_fd = ::open((next.dir() / "wb-next").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(data_fd >= 0);
  lazy.data_digest = digest_data_file(data_fd, 10);
  next.put_file_lazy(lazy, data_fd);
  ::close(data_fd);
  CHECK(spares() == 1);
  CHECK(next.sync_pending());
  CHECK(summarize_journal(next.dir()).files == 1);
}

TEST_CASE("the tree record: the newest whole slot counts, the one last synced is kept until then",
          "[fs][journal]") {
  TempDir root("fs-journal");
  const auto tree_with = [](std::uint64_t version) {
    JournalTree t;
    t.base = make_empty_tree(0755, 0, 0, 0);
    t.local = t.base;
    t.local.next_ino = 100 + version;
    t.base_version = version;
    return t;
  };
  // The version of the tree the next mount replays, and what it could not read.
  const auto replayed = [&] {
    Journal next(root.path());
    auto orphans = next.claim_orphans();
    REQUIRE(orphans.size() == 1);
    const std::uint64_t version = orphans[0].tree ? orphans[0].tree->base_version : 0;
    const std::size_t problems = orphans[0].problems.size();
    next.release_orphan(orphans[0]);
    return std::make_pair(version, problems);
  };

  std::filesystem::path dir;
  std::filesystem::path durable;  // the slot holding version 1 once it was synced
  {
    Journal journal(root.path());
    dir = journal.dir();
    journal.put_tree_lazy(encode_journal_tree(tree_with(1)));
    REQUIRE(journal.sync_pending());
    for (const char* name : {"tree.rec", "tree-2.rec"}) {
      if (std::filesystem::exists(dir / name))
        durable = dir / name;
    }
    REQUIRE_FALSE(durable.empty());
    const Bytes synced = read_bytes(durable);
    const std::filesystem::path other =
        durable.filename() == "tree.rec" ? dir / "tree-2.rec" : dir / "tree.rec";
    // Not synced: it goes to the other slot, the synced one stays as it was.
    journal.put_tree_lazy(encode_journal_tree(tree_with(2)));
    CHECK(read_bytes(durable) == synced);
    journal.put_tree(tree_with(3));  // synced: version 3's slot is the durable one now
    CHECK(read_bytes(durable) == synced);
    const Bytes three = read_bytes(other);
    journal.put_tree_lazy(encode_journal_tree(tree_with(4)));
    journal.put_tree_lazy(encode_journal_tree(tree_with(5)));
    CHECK(read_bytes(other) == three);  // 4 and 5 overwrote version 1's slot
    CHECK(read_bytes(durable) != synced);
    CHECK(journal.has_tree());
  }
  CHECK(replayed() == std::make_pair(std::uint64_t{5}, std::size_t{0}));

  // Put back as orphans of one folder: a slot cut short (a crash in mid-write) does not count,
  // the other one does; with both damaged the tree is reported unreadable.
  const auto damage = [&](const std::filesystem::path& slot) {
    Bytes bytes = read_bytes(slot);
    REQUIRE(bytes.size() > 40);
    bytes[bytes.size() / 2] ^= 0x5a;
    write_file(slot, bytes);
  };
  {
    Journal journal(root.path());
    dir = journal.dir();
    journal.put_tree_lazy(encode_journal_tree(tree_with(6)));
    REQUIRE(journal.sync_pending());
    journal.put_tree_lazy(encode_journal_tree(tree_with(7)));
    REQUIRE(journal.sync_pending());
  }
  damage(dir / "tree-2.rec");  // version 7's slot (the second one written)
  CHECK(replayed() == std::make_pair(std::uint64_t{6}, std::size_t{0}));
  {
    Journal journal(root.path());
    dir = journal.dir();
    journal.put_tree_lazy(encode_journal_tree(tree_with(8)));
    REQUIRE(journal.sync_pending());
    journal.put_tree_lazy(encode_journal_tree(tree_with(9)));
  }
  damage(dir / "tree.rec");
  damage(dir / "tree-2.rec");
  CHECK(replayed() == std::make_pair(std::uint64_t{0}, std::size_t{1}));

  // A folder of the format before the slots: one tree.rec holding the bare record.
  const std::filesystem::path legacy = root / "m-1-legacy";
  std::filesystem::create_directory(legacy);
  const Bytes bare = encode_journal_tree(tree_with(10));
  write_file(legacy / "tree.rec", bare);
  CHECK(replayed() == std::make_pair(std::uint64_t{10}, std::size_t{0}));
}

TEST_CASE("dropped small data files are emptied and reused, but not one still in use",
          "[fs][journal]") {
  TempDir root("fs-journal");
  Journal journal(root.path());
  const auto put = [&](std::uint64_t ino, const std::string& text) {
    auto [fd, name] = journal.new_data_file();
    REQUIRE(::pwrite(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()));
    ::close(fd);
    JournalFile f = sample_file();
    f.ino = ino;
    f.data_name = name;
    f.bytes = text.size();
    journal.put_file(f);
    return std::make_pair(name, f.sequence);
  };
  const auto [released, released_sequence] = put(7, "released bytes");
  const auto [held, held_sequence] = put(8, "held bytes");
  CHECK(journal.drop_files({{7, released_sequence, true}, {8, held_sequence, false}}) ==
        std::string("released bytes").size() + std::string("held bytes").size());
  CHECK(journal.file_count() == 0);
  // The released one comes back, empty; the held one waits for the sweep, bytes intact.
  auto [fd, name] = journal.new_data_file();
  CHECK(name == released);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == 0);
  ::close(fd);
  std::ifstream in(journal.dir() / held);
  std::string text;
  std::getline(in, text);
  CHECK(text == "held bytes");
  // None left to reuse: a new file.
  auto [fresh_fd, fresh] = journal.new_data_file();
  CHECK(fresh != released);
  CHECK(fresh != held);
  ::close(fresh_fd);
  journal.sweep();
  CHECK_FALSE(std::filesystem::exists(journal.dir() / held));
}

namespace {

InodeRecord regular_file(std::int64_t at) {
  InodeRecord rec;
  rec.mode = S_IFREG | 0644;
  rec.uid = 1000;
  rec.gid = 100;
  rec.atime_ns = rec.mtime_ns = rec.ctime_ns = at;
  return rec;
}

// The root, and a directory "docs" (inode 5) in it.
Tree tree_with_docs() {
  Tree tree = make_empty_tree(0755, 0, 0, 0);
  InodeRecord docs;
  docs.mode = S_IFDIR | 0755;
  tree.inodes.emplace(5, docs);
  tree.inodes.at(kRootIno).entries.emplace("docs", 5);
  tree.next_ino = 100;
  return tree;
}

}  // namespace

TEST_CASE("tree names round-trip, and only a regular file's valid name decodes", "[fs][journal]") {
  const TreeName name{5, "report.txt", 42, regular_file(7)};
  TreeName back;
  REQUIRE(decode_tree_name(encode_tree_name(name), back));
  CHECK(back == name);
  Bytes bytes = encode_tree_name(name);
  bytes.pop_back();
  CHECK_FALSE(decode_tree_name(bytes, back));
  TreeName dir = name;
  dir.record.mode = S_IFDIR | 0755;
  CHECK_FALSE(decode_tree_name(encode_tree_name(dir), back));
  TreeName slash = name;
  slash.name = "a/b";
  CHECK_FALSE(decode_tree_name(encode_tree_name(slash), back));
}

TEST_CASE("tree names go under their directory, or elsewhere as NAME.recovered-INO",
          "[fs][journal]") {
  Tree tree = tree_with_docs();
  tree.inodes.emplace(7, regular_file(1));
  tree.inodes.at(5).entries.emplace("taken", 7);
  const std::vector<TreeName> names{
      {5, "new", 10, regular_file(50)},
      {5, "taken", 11, regular_file(51)},
      {99, "lost", 12, regular_file(52)},  // its directory is not there
      {5, "again", 7, regular_file(53)},   // an inode the tree has: left alone
  };
  CHECK(apply_tree_names(tree, names) == 2);
  CHECK(tree.inodes.at(5).entries.at("new") == 10);
  CHECK(tree.inodes.at(5).entries.at("taken") == 7);
  CHECK(tree.inodes.at(5).entries.at("taken.recovered-11") == 11);
  CHECK(tree.inodes.at(kRootIno).entries.at("lost.recovered-12") == 12);
  CHECK_FALSE(tree.inodes.at(5).entries.contains("again"));
  CHECK(tree.inodes.at(10) == regular_file(50));
  CHECK(tree.inodes.at(5).mtime_ns == 51);  // the newest creation in it
  CHECK_FALSE(check_tree(tree));
}

TEST_CASE("names appended to the tree record are replayed with it, up to a torn one",
          "[fs][journal]") {
  TempDir root("fs-journal");
  JournalTree tree;
  tree.base = make_empty_tree(0755, 0, 0, 0);
  tree.local = tree_with_docs();
  tree.base_version = 3;
  const TreeName a{5, "a.txt", 10, regular_file(1)};
  const TreeName b{5, "b.txt", 11, regular_file(2)};
  const TreeName c{kRootIno, "c", 12, regular_file(3)};
  const auto replayed = [&] {
    Journal next(root.path());
    auto orphans = next.claim_orphans();
    REQUIRE(orphans.size() == 1);
    REQUIRE(orphans[0].tree);
    CHECK(orphans[0].problems.empty());
    CHECK_FALSE(check_tree(orphans[0].tree->local));
    std::map<std::string, std::uint64_t> named = orphans[0].tree->local.inodes.at(5).entries;
    for (const auto& [name, ino] : orphans[0].tree->local.inodes.at(kRootIno).entries)
      named.emplace("/" + name, ino);
    next.release_orphan(orphans[0]);
    return named;
  };
  std::filesystem::path dir;
  {
    Journal journal(root.path());
    dir = journal.dir();
    CHECK_FALSE(journal.append_tree_name(a));  // no tree record to add to
    journal.put_tree_lazy(encode_journal_tree(tree));
    REQUIRE(journal.sync_pending());
    CHECK(journal.append_tree_name(a));  // to the synced slot
    CHECK(journal.append_tree_name(b));
    REQUIRE(journal.sync_pending());
    CHECK(journal.append_tree_name(c));
  }
  using Named = std::map<std::string, std::uint64_t>;
  CHECK(replayed() == Named{{"a.txt", 10}, {"b.txt", 11}, {"/docs", 5}, {"/c", 12}});

  {
    Journal journal(root.path());
    dir = journal.dir();
    journal.put_tree_lazy(encode_journal_tree(tree));
    CHECK(journal.append_tree_name(a));
    CHECK(journal.append_tree_name(b));
  }
  // A crash in the middle of the last name: the names before it count.
  const std::filesystem::path slot =
      std::filesystem::exists(dir / "tree-2.rec") ? dir / "tree-2.rec" : dir / "tree.rec";
  std::filesystem::resize_file(slot, std::filesystem::file_size(slot) - 3);
  CHECK(replayed() == Named{{"a.txt", 10}, {"/docs", 5}});

  {
    Journal journal(root.path());
    journal.put_tree_lazy(encode_journal_tree(tree));
    REQUIRE(journal.sync_pending());
    CHECK(journal.append_tree_name(a));
    // A whole record replaces the names; one of the same size written over the slot later
    // leaves the old name's bytes after it, which do not count.
    journal.put_tree_lazy(encode_journal_tree(tree));
    REQUIRE(journal.sync_pending());
    journal.put_tree_lazy(encode_journal_tree(tree));
    CHECK(journal.append_tree_name(c));
    journal.put_tree_lazy(encode_journal_tree(tree));
  }
  CHECK(replayed() == Named{{"/docs", 5}});

  Journal full(root.path());
  full.put_tree_lazy(encode_journal_tree(tree));
  for (std::size_t i = 0; i < Journal::kMaxTreeNames; ++i)
    REQUIRE(full.append_tree_name({5, "f" + std::to_string(i), 1000 + i, regular_file(4)}));
  CHECK_FALSE(full.append_tree_name({5, "one more", 99999, regular_file(4)}));
}
