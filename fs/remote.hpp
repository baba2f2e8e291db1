// The mount's tree and files on the servers, through the library's object calls: loading and
// committing the tree, and, for the command line, finding a path in it and fetching a file the
// mount wrote (so `splitfs fetch docs/a.txt` works for files copied into a mount).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <splitfs/client.hpp>
#include <string>
#include <vector>

#include "fs/tree.hpp"

namespace splitfs::fs {

struct RemoteTree {
  Tree tree;
  std::uint64_t version = 0;
};

// The committed tree, verified and decoded; nullopt when no mount has committed one yet.
// Throws splitfs::Error (IntegrityError when it does not decode).
std::optional<RemoteTree> load_tree(Client& client, std::uint64_t min_version = 0);
// Commits tree as version expected + 1. Throws ConflictError when another mount committed first.
StoredObject save_tree(Client& client, const Tree& tree, std::uint64_t expected);

// The inode a path names ("a/b", "/a/b"; empty components and "." are skipped), following no
// symlinks; nullopt if there is none.
std::optional<std::uint64_t> resolve_path(const Tree& tree, std::string_view path);

struct PathEntry {
  std::string path;  // "/a/b"
  std::uint64_t ino = 0;
  const InodeRecord* record = nullptr;
};
// Every regular file and symlink under the root, by path (one entry per name of a hard link).
std::vector<PathEntry> list_paths(const Tree& tree);

// Writes the content of regular file ino to dest (a file path, or a folder to put `name` in),
// verified, through a temporary file renamed into place. Returns the path written.
std::filesystem::path fetch_file(Client& client, const Tree& tree, std::uint64_t ino,
                                 const std::string& name, const std::filesystem::path& dest);

}  // namespace splitfs::fs
