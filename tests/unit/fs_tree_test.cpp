// The mount's tree: encoding, structural checks, link counts and the three-way merge.
#include <sys/stat.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "fs/namespace.hpp"
#include "fs/tree.hpp"

using namespace splitfs::fs;
using splitfs::Bytes;
using Committed = std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>;

namespace {

InodeRecord rec(std::uint32_t mode) {
  InodeRecord r;
  r.mode = mode;
  return r;
}

// root/{docs/{a.txt, link -> a.txt}, b.bin (second name of a.txt)}
Tree sample() {
  Tree t = make_empty_tree(0755, 0, 0, 1);
  t.next_ino = 100;
  t.inodes[2] = rec(S_IFDIR | 0750);
  t.inodes[2].uid = 7;
  t.inodes[2].gid = 8;
  t.inodes[2].mtime_ns = 5;
  t.inodes[3] = rec(S_IFREG | 0644);
  t.inodes[3].size = 1234;
  t.inodes[3].content_version = 3;
  t.inodes[3].xattrs["user.tag"] = std::string("v\0x", 3);
  t.inodes[4] = rec(S_IFLNK | 0777);
  t.inodes[4].size = 5;
  t.inodes[4].target = "a.txt";
  t.inodes[kRootIno].entries = {{"docs", 2}, {"b.bin", 3}};
  t.inodes[2].entries = {{"a.txt", 3}, {"link", 4}};
  return t;
}

Tree decoded(const Bytes& bytes) {
  Tree out;
  REQUIRE_FALSE(decode_tree(bytes, out));
  return out;
}

// The tree format, written field by field from its description: u8 format 2, u64 next_ino, u32
// count, then each inode kept in ascending number: u64 number, u32 mode, uid, gid, u64 size, rdev,
// atime, mtime, ctime, content_version, the target as u32 length and bytes, u32 count of xattrs
// each as (name, value) strings, u32 count of names each as (u64 parent, name string), the names
// in (parent, name) order. Only names in kept directories count. Deliberately slow and plain.
Bytes reference_encoding(const Tree& t, const std::function<bool(std::uint64_t)>& keep,
                         const Committed& committed) {
  Bytes out;
  const auto be = [&](std::uint64_t v, int bytes) {
    for (int i = bytes - 1; i >= 0; --i)
      out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  const auto str = [&](const std::string& s) {
    be(s.size(), 4);
    for (const char c : s)
      out.push_back(static_cast<std::uint8_t>(c));
  };
  std::vector<std::uint64_t> kept;
  for (const auto& [ino, r] : t.inodes) {
    if (keep(ino))
      kept.push_back(ino);
  }
  be(2, 1);
  be(t.next_ino, 8);
  be(kept.size(), 4);
  for (const std::uint64_t ino : kept) {
    const InodeRecord& r = t.inodes.at(ino);
    std::uint64_t size = r.size;
    std::uint64_t version = r.content_version;
    if (committed.contains(ino))
      std::tie(size, version) = committed.at(ino);
    be(ino, 8);
    be(r.mode, 4);
    be(r.uid, 4);
    be(r.gid, 4);
    be(size, 8);
    be(r.rdev, 8);
    be(static_cast<std::uint64_t>(r.atime_ns), 8);
    be(static_cast<std::uint64_t>(r.mtime_ns), 8);
    be(static_cast<std::uint64_t>(r.ctime_ns), 8);
    be(version, 8);
    str(r.target);
    be(r.xattrs.size(), 4);
    for (const auto& [name, value] : r.xattrs) {
      str(name);
      str(value);
    }
    std::vector<std::pair<std::uint64_t, std::string>> names;
    for (const std::uint64_t dir : kept) {
      for (const auto& [name, child] : t.inodes.at(dir).entries) {
        if (child == ino)
          names.emplace_back(dir, name);
      }
    }
    std::sort(names.begin(), names.end());
    be(names.size(), 4);
    for (const auto& [parent, name] : names) {
      be(parent, 8);
      str(name);
    }
  }
  return out;
}

// "" when equal, else where two encodings part (Catch would print every byte of both).
std::string difference(const Bytes& got, const Bytes& want) {
  if (got == want)
    return "";
  const auto at = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
  return "sizes " + std::to_string(got.size()) + " and " + std::to_string(want.size()) +
         ", first difference at byte " + std::to_string(at.first - got.begin());
}

std::string random_bytes(std::mt19937_64& rng, std::size_t n) {
  std::string s(n, '\0');
  for (char& c : s)
    c = static_cast<char>(rng());
  return s;
}

// A valid tree (check_tree() passes) of up to `max_inodes` inodes: nested directories, files with
// several names (in one directory or several), symlinks, devices, xattrs up to one larger than
// the encoder's staging buffer. Inode numbers have gaps, sometimes wide ones; names are created
// in an order unrelated to the numbers, so a child's names come from anywhere.
Tree random_tree(std::mt19937_64& rng, std::size_t max_inodes) {
  Tree t = make_empty_tree(0755, 0, 0, 1);
  const std::uint64_t stride = rng() % 4 == 0 ? 100'000 : 1 + rng() % 3;
  std::vector<std::uint64_t> dirs{kRootIno};
  std::vector<std::uint64_t> files;
  const auto pick = [&](const std::vector<std::uint64_t>& v) { return v[rng() % v.size()]; };
  const auto fresh_name = [&](std::uint64_t dir) {
    std::string name;
    do {
      name = "n" + std::to_string(rng() % 100000);
      if (rng() % 8 == 0)
        name += std::string(rng() % 240, 'x');
    } while (t.inodes[dir].entries.contains(name));
    return name;
  };
  const std::size_t count = 1 + rng() % max_inodes;
  std::uint64_t ino = kRootIno;
  for (std::size_t i = 1; i < count; ++i) {
    ino += 1 + rng() % stride;
    InodeRecord r;
    r.uid = static_cast<std::uint32_t>(rng());
    r.gid = static_cast<std::uint32_t>(rng());
    r.rdev = rng() % 3 == 0 ? rng() : 0;
    r.atime_ns = static_cast<std::int64_t>(rng());
    r.mtime_ns = static_cast<std::int64_t>(rng());
    r.ctime_ns = static_cast<std::int64_t>(rng());
    switch (rng() % 5) {
      case 0:
        r.mode = S_IFDIR | 0755;
        break;
      case 1: {
        r.mode = S_IFLNK | 0777;
        const std::size_t longest = rng() % 16 == 0 ? kMaxSymlinkBytes : 40;
        r.target = random_bytes(rng, 1 + rng() % longest);
        std::replace(r.target.begin(), r.target.end(), '\0', 'z');
        r.size = r.target.size();
        break;
      }
      case 2:
        r.mode = S_IFCHR | 0600;
        break;
      default:
        r.mode = S_IFREG | 0644;
        r.size = rng() % 100000;
        r.content_version = rng() % 50;
        break;
    }
    for (std::uint64_t x = rng() % 4 == 0 ? rng() % 4 : 0; x > 0; --x)
      r.xattrs["user.x" + std::to_string(x)] = random_bytes(rng, rng() % 64);
    if (rng() % 40 == 0)
      r.xattrs["user.big"] = random_bytes(rng, 9000 + rng() % 3000);
    const std::uint64_t parent = pick(dirs);
    const bool dir = S_ISDIR(r.mode);
    t.inodes[ino] = std::move(r);
    t.inodes[parent].entries.emplace(fresh_name(parent), ino);
    (dir ? dirs : files).push_back(ino);
    if (!files.empty() && rng() % 6 == 0) {  // a hard link to any file so far
      const std::uint64_t dir_for_link = pick(dirs);
      const std::uint64_t linked = pick(files);  // (argument order is unspecified)
      t.inodes[dir_for_link].entries.emplace(fresh_name(dir_for_link), linked);
    }
  }
  t.next_ino = ino + 1 + rng() % 1000;
  return t;
}

}  // namespace

TEST_CASE("a tree survives encoding") {
  const Tree t = sample();
  CHECK(decoded(encode_tree(t)) == t);
  CHECK(decoded(encode_tree(make_empty_tree(0700, 1, 2, 3))) == make_empty_tree(0700, 1, 2, 3));
}

TEST_CASE("decoding refuses damaged or inconsistent trees") {
  Tree out;
  Bytes bytes = encode_tree(sample());
  SECTION("truncated") {
    bytes.pop_back();
    CHECK(decode_tree(bytes, out) == TreeErrc::malformed);
  }
  SECTION("trailing bytes") {
    bytes.push_back(0);
    CHECK(decode_tree(bytes, out) == TreeErrc::malformed);
  }
  SECTION("unknown format") {
    bytes[0] = 9;
    CHECK(decode_tree(bytes, out) == TreeErrc::unsupported_format);
  }
  Tree t = sample();
  bool encodable = true;  // names are stored with the inode they name: a dangling one cannot be
  SECTION("an entry naming a missing inode") {
    t.inodes[2].entries["ghost"] = 50;
    encodable = false;
  }
  SECTION("a directory with two parents") {
    t.inodes[kRootIno].entries["again"] = 2;
  }
  SECTION("an inode no name reaches") {
    t.inodes[60] = rec(S_IFREG | 0600);
  }
  SECTION("a bad name") {
    t.inodes[2].entries["a/b"] = 3;
  }
  SECTION("a number not below next_ino") {
    t.next_ino = 4;
  }
  SECTION("a root that is not a directory") {
    t.inodes[kRootIno].mode = S_IFREG | 0644;
  }
  SECTION("a symlink without target") {
    t.inodes[4].target.clear();
  }
  SECTION("a name under something that is not a directory") {
    t.inodes[3].entries["inside"] = 4;
  }
  if (t != sample()) {
    CHECK(check_tree(t) == TreeErrc::inconsistent);
    if (encodable)
      CHECK(decode_tree(encode_tree(t), out) == TreeErrc::inconsistent);
  }
}

TEST_CASE("creating a file changes only the end of the encoded tree") {
  Tree t = make_empty_tree(0755, 0, 0, 1);
  t.next_ino = 100000;
  t.inodes[2] = rec(S_IFDIR | 0755);
  t.inodes[kRootIno].entries["big"] = 2;
  for (std::uint64_t ino = 3; ino < 3000; ++ino) {
    t.inodes[ino] = rec(S_IFREG | 0644);
    t.inodes[2].entries["file-" + std::to_string(ino)] = ino;
  }
  const Bytes before = encode_tree(t);
  t.inodes[3000] = rec(S_IFREG | 0644);
  t.inodes[2].entries["a-new-file"] = 3000;  // sorts first among the names
  t.inodes[2].mtime_ns = 99;
  const Bytes after = encode_tree(t);
  REQUIRE(after.size() > before.size());
  // Only the directory's fixed-size fields (near the start) and the appended inode differ.
  std::size_t differing = 0;
  for (std::size_t i = 0; i < before.size(); ++i)
    differing += before[i] != after[i] ? 1 : 0;
  CHECK(differing <= 16);
  CHECK(decoded(after) == t);
}

TEST_CASE("link counts follow from the entries") {
  const auto counts = link_counts(sample());
  CHECK(counts.at(kRootIno) == 3);  // 2 + docs
  CHECK(counts.at(2) == 2);
  CHECK(counts.at(3) == 2);  // a.txt and b.bin
  CHECK(counts.at(4) == 1);
}

TEST_CASE("names") {
  CHECK(valid_name("a"));
  CHECK(valid_name(std::string(255, 'x')));
  CHECK_FALSE(valid_name(std::string(256, 'x')));
  CHECK_FALSE(valid_name(""));
  CHECK_FALSE(valid_name("."));
  CHECK_FALSE(valid_name(".."));
  CHECK_FALSE(valid_name("a/b"));
  CHECK_FALSE(valid_name(std::string("a\0b", 3)));
}

TEST_CASE("a merge keeps independent changes of both sides") {
  const Tree base = sample();
  Tree local = base;
  Tree remote = base;
  local.inodes[100] = rec(S_IFREG | 0600);
  local.inodes[kRootIno].entries["mine"] = 100;
  local.next_ino = 200;
  remote.inodes[200] = rec(S_IFREG | 0600);
  remote.inodes[2].entries["theirs"] = 200;
  remote.next_ino = 300;
  remote.inodes[3].mode = S_IFREG | 0600;  // chmod on the other side
  const auto m = merge_trees(base, local, remote);
  REQUIRE_FALSE(check_tree(m.tree));
  CHECK(m.tree.inodes.at(kRootIno).entries.at("mine") == 100);
  CHECK(m.tree.inodes.at(2).entries.at("theirs") == 200);
  CHECK(m.tree.inodes.at(3).mode == (S_IFREG | 0600));
  CHECK(m.tree.next_ino == 300);
  CHECK(m.dropped.empty());
}

TEST_CASE("a merge: when both sides change one thing, this mount wins but content is newest") {
  const Tree base = sample();
  Tree local = base;
  Tree remote = base;
  local.inodes[3].mode = S_IFREG | 0611;
  remote.inodes[3].mode = S_IFREG | 0622;
  remote.inodes[3].content_version = 9;
  remote.inodes[3].size = 99;
  local.inodes[kRootIno].entries["x"] = 4;
  remote.inodes[kRootIno].entries["x"] = 3;
  const auto m = merge_trees(base, local, remote);
  REQUIRE_FALSE(check_tree(m.tree));
  CHECK(m.tree.inodes.at(3).mode == (S_IFREG | 0611));
  CHECK(m.tree.inodes.at(3).content_version == 9);
  CHECK(m.tree.inodes.at(3).size == 99);
  CHECK(m.tree.inodes.at(kRootIno).entries.at("x") == 4);
}

TEST_CASE("a merge: a removal on the other side wins over an attribute change here") {
  const Tree base = sample();
  Tree local = base;
  Tree remote = base;
  local.inodes[4].uid = 42;
  remote.inodes[2].entries.erase("link");
  remote.inodes.erase(4);
  const auto m = merge_trees(base, local, remote);
  REQUIRE_FALSE(check_tree(m.tree));
  CHECK_FALSE(m.tree.inodes.contains(4));
  CHECK(m.dropped == std::set<std::uint64_t>{4});
}

TEST_CASE("a merge repairs a directory cycle made by two renames") {
  Tree base = make_empty_tree(0755, 0, 0, 0);
  base.next_ino = 10;
  base.inodes[2] = rec(S_IFDIR | 0755);
  base.inodes[3] = rec(S_IFDIR | 0755);
  base.inodes[kRootIno].entries = {{"a", 2}, {"b", 3}};
  Tree local = base;  // mv a b/
  local.inodes[kRootIno].entries.erase("a");
  local.inodes[3].entries["a"] = 2;
  Tree remote = base;  // mv b a/
  remote.inodes[kRootIno].entries.erase("b");
  remote.inodes[2].entries["b"] = 3;
  const auto m = merge_trees(base, local, remote);
  REQUIRE_FALSE(check_tree(m.tree));
  CHECK(m.tree.inodes.contains(2));
  CHECK(m.tree.inodes.contains(3));
  CHECK(m.dropped.empty());
  CHECK(m.tree.inodes.at(kRootIno).entries.size() == 1);
  CHECK(m.tree.inodes.at(kRootIno).entries.begin()->first.starts_with("lost+found."));
}

TEST_CASE("a merge with nothing changed locally is the remote tree") {
  const Tree base = sample();
  Tree remote = base;
  remote.inodes[2].entries.erase("a.txt");
  remote.inodes[kRootIno].entries["moved"] = 3;
  CHECK(merge_trees(base, base, remote).tree == remote);
}

TEST_CASE("the encoding of random trees is the format's, and decodes to the same tree") {
  const auto all = [](std::uint64_t) { return true; };
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    std::mt19937_64 rng(seed);
    const Tree t = random_tree(rng, seed % 10 == 0 ? 3000 : 200);
    INFO("seed " << seed << ", " << t.inodes.size() << " inodes");
    REQUIRE_FALSE(check_tree(t));
    const Bytes bytes = encode_tree(t);
    REQUIRE(difference(bytes, reference_encoding(t, all, {})) == "");
    CHECK(decoded(bytes) == t);
  }
}

TEST_CASE("a view of a tree leaves inodes out and replaces committed content, as the format says") {
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    std::mt19937_64 rng(seed);
    Tree t = random_tree(rng, seed % 10 == 0 ? 3000 : 200);
    // Inodes no name reaches (orphans), and a name of an inode the tree lacks.
    for (std::uint64_t extra = rng() % 4; extra > 0; --extra) {
      InodeRecord orphan = rec(S_IFREG | 0600);
      orphan.size = rng();
      t.inodes[t.next_ino++] = orphan;
    }
    if (rng() % 3 == 0)
      t.inodes[kRootIno].entries["ghost"] = t.next_ino + 5;
    std::vector<std::uint64_t> leave_out;
    Committed committed;
    const std::uint64_t every = 2 + rng() % 8;
    const auto links = link_counts(t);
    for (const auto& [ino, r] : t.inodes) {
      const bool orphan = !links.contains(ino);
      if (orphan || rng() % every == 0)
        leave_out.push_back(ino);
      if (rng() % every == 0)
        committed[ino] = {rng(), rng()};
    }
    leave_out.push_back(t.next_ino + 100);  // numbers the tree lacks change nothing
    committed[t.next_ino + 7] = {1, 2};
    const auto keep = [&](std::uint64_t ino) {
      return !std::binary_search(leave_out.begin(), leave_out.end(), ino);
    };
    INFO("seed " << seed << ", " << t.inodes.size() << " inodes, " << leave_out.size() << " out");
    CHECK(difference(encode_tree_view(t, leave_out, committed),
                     reference_encoding(t, keep, committed)) == "");
  }
}

TEST_CASE("a namespace's snapshot encoding leaves out its orphans and applies committed content") {
  const auto all = [](std::uint64_t) { return true; };
  std::size_t orphans = 0;
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    std::mt19937_64 rng(seed);
    const Tree t = random_tree(rng, 400);
    Namespace ns(t);
    // Unlink some names while the file is open: the inodes that lose their last one are orphans.
    for (const auto& [dir, r] : t.inodes) {
      for (const auto& [name, child] : r.entries) {
        if (S_ISDIR(t.inodes.at(child).mode) || rng() % 4 != 0)
          continue;
        std::uint64_t ino = 0;
        ns.add_open(child);
        REQUIRE(ns.unlink(dir, name, 7, ino) == 0);
      }
    }
    Committed committed;
    for (const auto& [ino, r] : t.inodes) {
      if (rng() % 5 == 0)
        committed[ino] = {rng(), rng()};
    }
    const Tree named = ns.snapshot();
    orphans += t.inodes.size() - named.inodes.size();
    INFO("seed " << seed << ", " << named.inodes.size() << " of " << t.inodes.size() << " named");
    CHECK(difference(ns.encode_snapshot(committed), reference_encoding(named, all, committed)) ==
          "");
  }
  CHECK(orphans > 60);
}

TEST_CASE("a directory whose names sort like their inode numbers encodes as the format says") {
  // The common shape (files created in name order): names already come in inode order.
  Tree t = make_empty_tree(0755, 0, 0, 1);
  for (std::uint64_t ino = 2; ino < 2000; ++ino) {
    t.inodes[ino] = rec(S_IFREG | 0644);
    t.inodes[ino].content_version = ino;
    char name[16];
    std::snprintf(name, sizeof name, "f%06llu", static_cast<unsigned long long>(ino));
    t.inodes[kRootIno].entries.emplace(name, ino);
  }
  t.next_ino = 2000;
  const auto all = [](std::uint64_t) { return true; };
  CHECK(difference(encode_tree(t), reference_encoding(t, all, {})) == "");
  std::erase_if(t.inodes[kRootIno].entries, [](const auto& e) { return e.second == 700; });
  const std::vector<std::uint64_t> leave_out{700, 1500};
  const Committed committed{{3, {1, 2}}, {1500, {3, 4}}, {1999, {5, 6}}};
  const auto keep = [](std::uint64_t ino) { return ino != 700 && ino != 1500; };
  CHECK(difference(encode_tree_view(t, leave_out, committed),
                   reference_encoding(t, keep, committed)) == "");
}
