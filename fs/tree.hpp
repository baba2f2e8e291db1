// The mount's namespace as plain data: the inode table that is stored, encrypted, as one object on
// the servers (see mount.hpp), its encoding, and the three-way merge that reconciles this mount's
// changes with a newer tree another mount committed. Sans-I/O: pure functions over values.
//
// Inode numbers are allocated from next_ino and never reused; a mount reserves a block of them
// before it creates anything, so two mounts never hand out the same number. Regular file content
// is a separate object per inode ("ino/<n>"), so a rename or a hard link never moves data; the tree
// only records which content version is current. Link counts are not stored: they follow from the
// directory entries (a directory has 2 + its subdirectories, anything else one per name).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::fs {

inline constexpr std::uint64_t kRootIno = 1;
inline constexpr std::size_t kMaxNameBytes = 255;          // one path component
inline constexpr std::size_t kMaxSymlinkBytes = 4095;      // PATH_MAX - 1
inline constexpr std::size_t kMaxXattrNameBytes = 255;     // XATTR_NAME_MAX
inline constexpr std::size_t kMaxXattrValueBytes = 65536;  // XATTR_SIZE_MAX
inline constexpr std::size_t kMaxXattrTotalBytes = 65536;  // names and values of one inode
inline constexpr std::size_t kMaxInodes = 1u << 24;
inline constexpr std::uint32_t kMaxLinks = 65000;

struct InodeRecord {
  std::uint32_t mode = 0;  // file type and permission bits, as in st_mode
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::uint64_t size = 0;  // regular files: the size of content_version; symlinks: target length
  std::uint64_t rdev = 0;
  std::int64_t atime_ns = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::uint64_t content_version = 0;  // of object content_key(ino); 0: none yet (empty file)
  std::string target;                 // symlinks
  std::map<std::string, std::string> xattrs;
  std::map<std::string, std::uint64_t> entries;  // directories: name -> inode number
  friend bool operator==(const InodeRecord&, const InodeRecord&) = default;
};

struct Tree {
  std::uint64_t next_ino = kRootIno + 1;  // lowest number no mount has reserved
  std::map<std::uint64_t, InodeRecord> inodes;
  friend bool operator==(const Tree&, const Tree&) = default;
};

// The object holding ino's content.
std::string content_key(std::uint64_t ino);
// The object holding the tree, and its segment size: small, because a commit sends the
// segments that changed.
inline constexpr const char* kTreeKey = "tree";
inline constexpr std::uint32_t kTreeSegmentBytes = 64u << 10;

// A tree with only the root directory, owned by uid/gid, made at time now.
Tree make_empty_tree(std::uint32_t root_mode, std::uint32_t uid, std::uint32_t gid,
                     std::int64_t now_ns);

// A valid path component: 1..255 bytes, no '/' or NUL, not "." or "..".
bool valid_name(std::string_view name);

// Link counts derived from the entries (see above); 0 for an inode no entry reaches.
std::map<std::uint64_t, std::uint32_t> link_counts(const Tree& tree);

enum class TreeErrc { malformed = 1, unsupported_format, inconsistent };
const std::error_category& tree_category();
std::error_code make_error_code(TreeErrc e);

Bytes encode_tree(const Tree& tree);
// What encode_tree() gives for the tree of the inodes of `tree` but those in `leave_out` (in
// ascending order; the names leading to them go too), with (size, content_version) replaced for
// the inodes in `committed`, without building that tree.
Bytes encode_tree_view(
    const Tree& tree, std::span<const std::uint64_t> leave_out,
    const std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>& committed);
// Also checks the structure: the root is a directory, every entry names an existing inode and a
// valid name, every directory but the root has exactly one parent, every inode is reachable from
// the root, and all numbers are below next_ino.
std::error_code decode_tree(ByteView bytes, Tree& out);
std::error_code check_tree(const Tree& tree);

// Merges this mount's changes (base -> local) into a newer tree (base -> remote). Per inode and per
// directory entry: a side that did not change takes the other side's; when both changed, this
// mount's attributes and entries win, but content is the newest content_version of the two. Then
// it repairs what concurrent changes can break: entries naming deleted inodes are dropped, a
// directory reachable under two names keeps one, a directory cut off from the root (two renames
// forming a cycle) is reattached to the root as "lost+found.<ino>", and inodes no name reaches
// are dropped. The result passes check_tree().
struct MergeResult {
  Tree tree;
  std::set<std::uint64_t> dropped;  // inodes of base, local or remote that the result lacks
};
MergeResult merge_trees(const Tree& base, const Tree& local, const Tree& remote);

}  // namespace splitfs::fs

template <>
struct std::is_error_code_enum<splitfs::fs::TreeErrc> : std::true_type {};
