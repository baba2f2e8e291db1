// The mount's namespace operations over a Tree, with POSIX semantics and errno results, and the
// bookkeeping an inode needs while it lives: link counts, the parent of each directory, how many
// times the kernel has looked it up and how many open files refer to it. Sans-I/O and not
// thread-safe: the mount calls it under its tree lock, and unit tests call it directly.
//
// An inode whose last name goes away stays (an orphan, not in snapshots) while the kernel or an
// open file still refers to it; when the last reference goes it is "gone" and take_gone() hands
// its number to the mount, which deletes its content once a tree without it is committed.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/tree.hpp"

namespace splitfs::fs {

// Who asks, for ownership of new inodes.
struct Caller {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};

class Namespace {
 public:
  // Returned by create() when this mount has no inode numbers left: reserve_block() and commit.
  static constexpr int kNeedInodes = -1;

  explicit Namespace(Tree tree);

  const InodeRecord* find(std::uint64_t ino) const;
  // For attribute changes; the caller calls changed() after.
  InodeRecord* find_mut(std::uint64_t ino);
  std::uint32_t nlink(std::uint64_t ino) const;
  // A path naming ino ("/" for the root; its first name, in (parent, name) order, for a file
  // with several), as far up as names reach; without copying the tree.
  std::string path_of(std::uint64_t ino) const;
  // The parent of a directory (the root is its own parent).
  std::uint64_t parent(std::uint64_t dir) const;
  // The generation() create() made ino at; 0 for an inode that came with a tree (or is unknown).
  std::uint64_t made_at(std::uint64_t ino) const;
  bool is_orphan(std::uint64_t ino) const { return nlink(ino) == 0; }

  int lookup(std::uint64_t parent, const std::string& name, std::uint64_t& ino) const;
  // Makes a new inode named name in parent: a regular file, directory, symlink (target) or
  // special file (rdev), with mode's type and permission bits. Applies the parent's set-group-ID
  // bit (group inherited; directories keep the bit).
  int create(std::uint64_t parent, const std::string& name, std::uint32_t mode, std::uint64_t rdev,
             const std::string& target, const Caller& caller, std::int64_t now, std::uint64_t& ino);
  int link(std::uint64_t ino, std::uint64_t parent, const std::string& name, std::int64_t now);
  // The removed name's inode is returned in ino (it may now be an orphan, or gone).
  int unlink(std::uint64_t parent, const std::string& name, std::int64_t now, std::uint64_t& ino);
  int rmdir(std::uint64_t parent, const std::string& name, std::int64_t now, std::uint64_t& ino);
  // flags: RENAME_NOREPLACE, RENAME_EXCHANGE. replaced: the inode a plain rename replaced, or 0.
  int rename(std::uint64_t parent, const std::string& name, std::uint64_t new_parent,
             const std::string& new_name, unsigned flags, std::int64_t now,
             std::uint64_t& replaced);

  // References beyond names.
  void add_lookup(std::uint64_t ino, std::uint64_t n = 1);
  void forget(std::uint64_t ino, std::uint64_t n);
  void add_open(std::uint64_t ino);
  void release_open(std::uint64_t ino);
  // Whether the kernel or an open file still refers to ino.
  bool referenced(std::uint64_t ino) const;
  // Inodes gone since the last call.
  std::vector<std::uint64_t> take_gone();
  // Drops every reference the kernel and open files hold (the mount is ending): orphans are gone.
  void drop_references();

  // Inode numbers: this mount allocates from its own reserved block.
  void reserve_block(std::uint64_t count);
  std::uint64_t inodes_left() const { return block_end_ - block_next_; }

  // Inodes with at least one name.
  std::size_t named_count() const;
  // The named inodes as a tree, for committing.
  Tree snapshot() const;
  // encode_tree(snapshot()) with (size, content_version) of the inodes in `committed` replaced,
  // without the copy.
  Bytes encode_snapshot(
      const std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>& committed) const;
  // Replaces the named inodes by `merged` (a merge of snapshot() with a newer remote tree). Inodes
  // merged lacks stay as orphans while referenced, else become gone.
  void adopt(Tree merged);

  // Bumped by every change; the mount commits when it moved past what was committed.
  std::uint64_t generation() const { return generation_; }
  void changed() { ++generation_; }

 private:
  struct Runtime {
    std::uint32_t nlink = 0;
    std::uint64_t parent = 0;  // directories
    std::uint64_t lookups = 0;
    std::uint32_t opens = 0;
    std::uint64_t made = 0;
  };
  int dir_of(std::uint64_t parent, InodeRecord*& dir);
  int check_name(const std::string& name) const;
  bool is_dir(std::uint64_t ino) const;
  // Is ino the directory `dir` or below it?
  bool is_within(std::uint64_t ino, std::uint64_t dir) const;
  void rebuild_runtime();
  void drop_link(std::uint64_t ino, std::int64_t now);
  void maybe_gone(std::uint64_t ino);
  void touch_dir(InodeRecord& dir, std::int64_t now);

  Tree tree_;  // named inodes and orphans
  std::unordered_map<std::uint64_t, Runtime> rt_;
  std::vector<std::uint64_t> gone_;
  std::uint64_t block_next_ = 0;
  std::uint64_t block_end_ = 0;
  std::uint64_t generation_ = 0;
};

}  // namespace splitfs::fs
