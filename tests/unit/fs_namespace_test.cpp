// Namespace operations and their errno results, link counts, orphans and snapshots.
#include <linux/fs.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <random>

#include "fs/namespace.hpp"

using namespace splitfs::fs;

namespace {

const Caller kUser{1000, 1000};

struct Fixture {
  Namespace ns{make_empty_tree(0755, 0, 0, 1)};
  std::int64_t now = 10;
  Fixture() { ns.reserve_block(1000); }

  std::uint64_t make(std::uint64_t parent, const std::string& name, std::uint32_t mode,
                     const std::string& target = {}) {
    std::uint64_t ino = 0;
    REQUIRE(ns.create(parent, name, mode, 0, target, kUser, ++now, ino) == 0);
    return ino;
  }
  std::uint64_t file(std::uint64_t parent, const std::string& name) {
    return make(parent, name, S_IFREG | 0644);
  }
  std::uint64_t dir(std::uint64_t parent, const std::string& name) {
    return make(parent, name, S_IFDIR | 0755);
  }
  int rename(std::uint64_t p, const std::string& n, std::uint64_t np, const std::string& nn,
             unsigned flags = 0) {
    std::uint64_t replaced = 0;
    return ns.rename(p, n, np, nn, flags, ++now, replaced);
  }
  void consistent() {
    const Tree t = ns.snapshot();
    REQUIRE_FALSE(check_tree(t));
    for (const auto& [ino, n] : link_counts(t))
      CHECK(ns.nlink(ino) == n);
  }
};

}  // namespace

TEST_CASE_METHOD(Fixture, "create and lookup") {
  const auto a = file(kRootIno, "a");
  std::uint64_t found = 0;
  CHECK(ns.lookup(kRootIno, "a", found) == 0);
  CHECK(found == a);
  CHECK(ns.find(a)->uid == 1000);
  CHECK(ns.find(kRootIno)->mtime_ns == now);
  CHECK(ns.lookup(kRootIno, "b", found) == ENOENT);
  CHECK(ns.lookup(a, "x", found) == ENOTDIR);
  CHECK(ns.lookup(kRootIno, std::string(256, 'n'), found) == ENAMETOOLONG);
  std::uint64_t ino = 0;
  CHECK(ns.create(kRootIno, "a", S_IFREG | 0600, 0, {}, kUser, now, ino) == EEXIST);
  CHECK(ns.create(kRootIno, std::string(256, 'n'), S_IFREG, 0, {}, kUser, now, ino) ==
        ENAMETOOLONG);
  CHECK(ns.create(a, "x", S_IFREG, 0, {}, kUser, now, ino) == ENOTDIR);
  CHECK(ns.create(kRootIno, std::string(255, 'n'), S_IFREG, 0, {}, kUser, now, ino) == 0);
  CHECK(ns.create(kRootIno, "l", S_IFLNK | 0777, 0, std::string(4096, 't'), kUser, now, ino) ==
        ENAMETOOLONG);
  consistent();
}

TEST_CASE_METHOD(Fixture, "directories: link counts, rmdir and unlink errors") {
  const auto d = dir(kRootIno, "d");
  CHECK(ns.nlink(kRootIno) == 3);
  CHECK(ns.nlink(d) == 2);
  const auto sub = dir(d, "sub");
  CHECK(ns.nlink(d) == 3);
  CHECK(ns.parent(sub) == d);
  file(d, "f");
  std::uint64_t ino = 0;
  CHECK(ns.rmdir(kRootIno, "d", now, ino) == ENOTEMPTY);
  CHECK(ns.rmdir(d, "f", now, ino) == ENOTDIR);
  CHECK(ns.unlink(d, "sub", now, ino) == EISDIR);
  CHECK(ns.unlink(d, "none", now, ino) == ENOENT);
  CHECK(ns.rmdir(d, "sub", now, ino) == 0);
  CHECK(ns.nlink(d) == 2);
  CHECK(ns.unlink(d, "f", now, ino) == 0);
  CHECK(ns.rmdir(kRootIno, "d", now, ino) == 0);
  CHECK(ns.nlink(kRootIno) == 2);
  consistent();
}

TEST_CASE_METHOD(Fixture, "hard links") {
  const auto a = file(kRootIno, "a");
  const auto d = dir(kRootIno, "d");
  CHECK(ns.link(a, d, "b", ++now) == 0);
  CHECK(ns.nlink(a) == 2);
  CHECK(ns.find(a)->ctime_ns == now);
  CHECK(ns.link(a, d, "b", now) == EEXIST);
  CHECK(ns.link(d, kRootIno, "d2", now) == EPERM);
  std::uint64_t ino = 0;
  CHECK(ns.unlink(kRootIno, "a", now, ino) == 0);
  CHECK(ns.nlink(a) == 1);
  CHECK(ns.lookup(d, "b", ino) == 0);
  consistent();
}

TEST_CASE_METHOD(Fixture, "rename") {
  const auto a = file(kRootIno, "a");
  const auto b = file(kRootIno, "b");
  const auto d = dir(kRootIno, "d");
  const auto e = dir(d, "e");
  const auto full = dir(kRootIno, "full");
  file(full, "x");
  std::uint64_t ino = 0;
  CHECK(rename(kRootIno, "a", kRootIno, "b", RENAME_NOREPLACE) == EEXIST);
  CHECK(rename(kRootIno, "zz", kRootIno, "b") == ENOENT);
  CHECK(rename(kRootIno, "d", e, "d") == EINVAL);
  CHECK(rename(kRootIno, "d", d, "self") == EINVAL);
  CHECK(rename(kRootIno, "a", kRootIno, "d") == EISDIR);
  CHECK(rename(kRootIno, "d", kRootIno, "a") == ENOTDIR);
  CHECK(rename(kRootIno, "d", kRootIno, "full") == ENOTEMPTY);
  CHECK(rename(kRootIno, "a", kRootIno, "b", RENAME_NOREPLACE | RENAME_EXCHANGE) == EINVAL);
  CHECK(rename(kRootIno, "a", kRootIno, "nope", RENAME_EXCHANGE) == ENOENT);

  SECTION("replacing a file") {
    std::uint64_t replaced = 0;
    CHECK(ns.rename(kRootIno, "a", kRootIno, "b", 0, ++now, replaced) == 0);
    CHECK(replaced == b);
    CHECK(ns.lookup(kRootIno, "b", ino) == 0);
    CHECK(ino == a);
    CHECK(ns.nlink(b) == 0);
    CHECK(ns.find(a)->ctime_ns == now);
  }
  SECTION("moving a directory updates both parents' link counts") {
    CHECK(rename(d, "e", full, "e") == 0);
    CHECK(ns.nlink(d) == 2);
    CHECK(ns.nlink(full) == 3);
    CHECK(ns.parent(e) == full);
  }
  SECTION("exchange a file and a directory across parents") {
    CHECK(rename(kRootIno, "a", d, "e", RENAME_EXCHANGE) == 0);
    CHECK(ns.lookup(kRootIno, "a", ino) == 0);
    CHECK(ino == e);
    CHECK(ns.parent(e) == kRootIno);
    CHECK(ns.nlink(d) == 2);
    CHECK(ns.nlink(kRootIno) == 5);
  }
  SECTION("two names of one file: nothing happens") {
    CHECK(ns.link(a, kRootIno, "a2", now) == 0);
    CHECK(rename(kRootIno, "a", kRootIno, "a2") == 0);
    CHECK(ns.lookup(kRootIno, "a", ino) == 0);
    CHECK(ns.nlink(a) == 2);
  }
  SECTION("a directory over an empty directory") {
    const auto empty = dir(kRootIno, "empty");
    std::uint64_t replaced = 0;
    CHECK(ns.rename(kRootIno, "d", kRootIno, "empty", 0, ++now, replaced) == 0);
    CHECK(replaced == empty);
    CHECK(ns.nlink(kRootIno) == 4);  // d (renamed), full, and the root itself
  }
  consistent();
}

TEST_CASE_METHOD(Fixture, "an unlinked inode lives while referenced, then is gone") {
  const auto a = file(kRootIno, "a");
  ns.add_lookup(a);
  ns.add_open(a);
  std::uint64_t ino = 0;
  CHECK(ns.unlink(kRootIno, "a", now, ino) == 0);
  CHECK(ns.is_orphan(a));
  CHECK(ns.find(a));
  CHECK_FALSE(ns.snapshot().inodes.contains(a));
  ns.forget(a, 1);
  CHECK(ns.take_gone().empty());
  ns.release_open(a);
  CHECK(ns.take_gone() == std::vector<std::uint64_t>{a});
  CHECK_FALSE(ns.find(a));
  consistent();
}

TEST_CASE_METHOD(Fixture, "the set-group-ID bit of a directory passes its group on") {
  const auto d = dir(kRootIno, "shared");
  ns.find_mut(d)->mode |= S_ISGID;
  ns.find_mut(d)->gid = 50;
  const auto f = file(d, "f");
  const auto sub = dir(d, "sub");
  CHECK(ns.find(f)->gid == 50);
  CHECK(ns.find(sub)->gid == 50);
  CHECK(ns.find(sub)->mode & S_ISGID);
  CHECK_FALSE(ns.find(f)->mode & S_ISGID);
}

TEST_CASE_METHOD(Fixture, "creating needs reserved inode numbers") {
  Namespace fresh(make_empty_tree(0755, 0, 0, 1));
  std::uint64_t ino = 0;
  CHECK(fresh.create(kRootIno, "a", S_IFREG, 0, {}, kUser, 1, ino) == Namespace::kNeedInodes);
  fresh.reserve_block(1);
  CHECK(fresh.create(kRootIno, "a", S_IFREG, 0, {}, kUser, 1, ino) == 0);
  CHECK(ino == kRootIno + 1);
  CHECK(fresh.create(kRootIno, "b", S_IFREG, 0, {}, kUser, 1, ino) == Namespace::kNeedInodes);
}

TEST_CASE_METHOD(Fixture, "adopting a merged tree keeps referenced orphans") {
  const auto a = file(kRootIno, "a");
  const auto b = file(kRootIno, "b");
  ns.add_open(a);
  Tree merged = ns.snapshot();
  merged.inodes[kRootIno].entries.clear();
  merged.inodes.erase(a);
  merged.inodes.erase(b);
  ns.adopt(merged);
  CHECK(ns.find(a));
  CHECK(ns.is_orphan(a));
  CHECK_FALSE(ns.find(b));
  CHECK(ns.take_gone() == std::vector<std::uint64_t>{b});
  consistent();
}

TEST_CASE("random namespace operations keep the tree consistent") {
  const auto seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  Fixture f;
  std::vector<std::uint64_t> dirs{kRootIno};
  const auto pick_dir = [&] { return dirs[rng() % dirs.size()]; };
  const auto name = [&] { return std::string(1, static_cast<char>('a' + rng() % 6)); };
  for (int i = 0; i < 3000; ++i) {
    std::uint64_t ino = 0;
    const auto p = pick_dir();
    switch (rng() % 7) {
      case 0:
        if (f.ns.create(p, name(), S_IFDIR | 0755, 0, {}, kUser, ++f.now, ino) == 0)
          dirs.push_back(ino);
        break;
      case 1:
        f.ns.create(p, name(), S_IFREG | 0644, 0, {}, kUser, ++f.now, ino);
        break;
      case 2:
        f.ns.unlink(p, name(), ++f.now, ino);
        break;
      case 3:
        f.ns.rmdir(p, name(), ++f.now, ino);
        break;
      case 4:
        f.rename(p, name(), pick_dir(), name(), rng() % 3 == 0 ? RENAME_EXCHANGE : 0);
        break;
      case 5:
        if (f.ns.lookup(p, name(), ino) == 0)
          f.ns.link(ino, pick_dir(), name(), ++f.now);
        break;
      default:
        f.rename(p, name(), pick_dir(), name(), RENAME_NOREPLACE);
    }
    f.ns.take_gone();
    std::erase_if(dirs, [&](std::uint64_t d) { return !f.ns.find(d); });
  }
  f.consistent();
}

TEST_CASE_METHOD(Fixture, "an inode is referenced while looked up or open") {
  const auto a = file(kRootIno, "a");
  CHECK_FALSE(ns.referenced(a));
  ns.add_lookup(a, 2);
  CHECK(ns.referenced(a));
  ns.forget(a, 2);
  CHECK_FALSE(ns.referenced(a));
  ns.add_open(a);
  CHECK(ns.referenced(a));
  ns.release_open(a);
  CHECK_FALSE(ns.referenced(a));
  CHECK(ns.find(a));  // still named: not gone
}

TEST_CASE_METHOD(Fixture, "dropping all references makes orphans gone, named inodes stay") {
  const auto a = file(kRootIno, "a");
  const auto b = file(kRootIno, "b");
  ns.add_lookup(a);
  ns.add_open(a);
  ns.add_lookup(b);
  std::uint64_t ino = 0;
  REQUIRE(ns.unlink(kRootIno, "a", now, ino) == 0);
  CHECK(ns.take_gone().empty());
  ns.drop_references();
  CHECK(ns.take_gone() == std::vector<std::uint64_t>{a});
  CHECK(ns.find(b));
  CHECK_FALSE(ns.referenced(b));
  consistent();
}
