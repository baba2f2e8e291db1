// The mount: a FUSE file system (libfuse3 low-level API) over the splitfs library. Everything a
// program writes into the mount is striped, encrypted and stored on the two servers; everything
// it reads comes back verified, through an in-memory LRU cache of decrypted segments.
//
// Where things live. The namespace (names, modes, owners, times, sizes, link counts, symlink
// targets, special files, xattrs) is one tree object (tree.hpp), committed as a whole; a regular
// file's content is one object per inode, so renames and hard links never move data. Inode
// numbers live in the tree and stay the same across renames and remounts.
//
// Caching contract (what another mount of the same store sees, and when):
//   - Attributes and names: the kernel keeps them attr_timeout / entry_timeout seconds (default
//     1). This mount checks the tree's version every `refresh` seconds (default 3) and, when
//     another mount committed, merges (tree.hpp) and tells the kernel to forget what changed.
//   - Data: the kernel's page cache is kept across opens while the file's content version is
//     unchanged; this process's segment cache (cache_size, default 256 MiB) is keyed by content,
//     so it is never stale. No kernel write-back cache: every write reaches this process.
//   - Durability: write() lands in a local write-back file (client home, writeback/). A close()
//     of a descriptor opened for writing, fsync() and fdatasync() return only once the file's
//     changed segments are stored and its new version and the tree (with every change this mount
//     made before) are committed on both servers; an error there is returned by close()/fsync().
//     Namespace changes without a close (mkdir, rename, unlink, chmod, utimens, xattrs, ...)
//     are committed within commit_delay (default 0.5 s) as one batch; fsync on a directory
//     forces it. Unmounting commits everything pending before the process exits.
//   - Two writers: content commits are compare-and-swap. When another mount committed the same
//     file since this mount read it, this mount's close() still succeeds but keeps its bytes in
//     a new file "NAME.conflict-<host>-<pid>-<n>" beside it, and the file shows the other
//     version. Concurrent namespace changes are merged, never lost silently.
//
// A network call is bounded by the library's deadlines (connect 3 s, stall 15 s); a failure
// answers EIO (ENOENT, EEXIST, ... where they apply), never hangs the kernel or crashes.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace splitfs::fs {

struct MountOptions {
  std::filesystem::path home;        // the client home (config and key)
  std::filesystem::path mountpoint;  // an existing directory
  bool foreground = false;
  bool debug = false;  // libfuse's request trace on stderr (implies foreground)
  std::uint64_t cache_bytes = 256u << 20;
  std::uint32_t readahead_segments = 32;
  double attr_timeout = 1.0;
  double entry_timeout = 1.0;
  std::chrono::milliseconds refresh{3000};
  std::chrono::milliseconds commit_delay{500};
  std::filesystem::path log_file;  // default: home/mount.log
  // Options passed to libfuse unchanged (allow_other, ro, ...).
  std::vector<std::string> fuse_options;
};

// Parses a comma-separated -o list: splitfs's own options (cache_size=SIZE with K/M/G suffixes,
// readahead=N segments, attr_timeout=S, entry_timeout=S, refresh=S, commit_delay=S, log=PATH,
// home=DIR, debug) go into options, the rest into options.fuse_options. Throws splitfs::Error.
void parse_mount_options(const std::string& list, MountOptions& options);

// Mounts options.mountpoint and serves it until it is unmounted (or SIGINT/SIGTERM/SIGHUP),
// then commits everything pending and returns. Unless foreground, it returns in the calling
// process as soon as the mount is ready, and serves from a background process. Returns an exit
// code: 0 when everything was committed.
int run_mount(const MountOptions& options);

// The name of the virtual directory at the mount's root (not listed, not creatable) and of the
// file in it that shows the mount's counters.
inline constexpr const char* kControlDir = ".splitfs";
inline constexpr const char* kStatsFile = "stats";

}  // namespace splitfs::fs
