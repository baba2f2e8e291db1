// The mount's tree: encoding, structural checks, link counts and the three-way merge.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "fs/tree.hpp"

using namespace splitfs::fs;
using splitfs::Bytes;

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
