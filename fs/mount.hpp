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
//   - Durability: write() lands in a local write-back file (client home, writeback/). fsync()
//     and fdatasync() return 0 only once the file's changed segments are stored and its new
//     version and the tree (with every change this mount made before) are committed on both
//     servers; otherwise they return an error (EIO) and the changes stay pending. close() of a
//     descriptor opened for writing stores and commits the same way while both servers answer;
//     when one is down or stalls (ServerUnavailable), close() still returns 0 once the file is
//     durable in the local journal (journal.hpp: its write-back file synced, its record and the
//     pending tree written), and the upload happens later, in the order files were closed, as
//     soon as a probe (probe.hpp, every 0.1-0.25 s) finds both servers back. A mount killed
//     meanwhile loses nothing: the next mount of the store replays the journal before serving.
//     While uploads are pending, a close() joins the queue instead of jumping it. A new file of
//     at most 1 MiB always takes the journal's way (group commit): its close() returns once its
//     data, its record and the tree naming it are written into the journal, without waiting for
//     the disk; a background syncer makes them durable every ~25 ms (sooner when many wait), one
//     batch at a time, and the uploader stores them within moments, several files at once and one
//     commit of the tree for all of them (while more keep coming, for those of up to 0.25 s). The
//     window: a crash of the mount process (kill -9) loses nothing (the page cache holds the
//     journal); a crash of the machine may lose such files closed in the last ~25-50 ms that were
//     never fsync'd and not uploaded yet (as ext4's commit interval does, only shorter); the replay
//     then says which, and never stores their bytes half-written (each such record carries a digest
//     of its data). A journaled file of more than 1 MiB is synced before its close() returns.
//     Segments of a file being written upload as they are written (also before the malware check:
//     nothing is committed before its verdict). Other failures (quota, integrity, ...) are
//     close()'s error, and the changes are kept and retried too. The journal is bounded
//     (writeback_size): a write that would exceed it gets ENOSPC, after trying to upload finished
//     segments first. Namespace changes without a close (mkdir, rename, unlink, chmod, utimens,
//     xattrs, ...) are committed within commit_delay (default 0.5 s) as one batch, and journaled
//     when that fails; fsync on a directory forces the commit. Unmounting uploads everything
//     pending while progress is made, gives up after unmount_wait seconds without any, and then
//     says what is left and where (the journal keeps it for the next mount; the exit code is then
//     1).
//   - Bounded waiting: getattr, lookup, readdir and reads of cached data need no network (a
//     file's segment list is kept after the kernel forgets it), so a dead server never hangs
//     `ls`, `stat` or `cat` of cached data.
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
  // The budget of the memory that grows with the data: cached segments, segments and their copies
  // in flight (uploads, downloads, read-ahead), and segment lists of files and commits. The
  // mount's peak resident set is this plus a fixed part (code, rules, connections, FUSE buffers).
  std::uint64_t cache_bytes = 256u << 20;
  // The optional disk tier of the segment cache (cache/disk_tier.hpp): sealed segments under
  // cache_dir, at most cache_dir_bytes; a remount (or a file larger than cache_bytes) reads them
  // without the network. Empty: memory only.
  std::filesystem::path cache_dir;
  std::uint64_t cache_dir_bytes = 1ull << 30;
  std::uint32_t readahead_segments = 32;
  double attr_timeout = 1.0;
  double entry_timeout = 1.0;
  std::chrono::milliseconds refresh{3000};
  std::chrono::milliseconds commit_delay{500};
  std::filesystem::path log_file;  // default: home/mount.log
  // Bound of the local write-back area (files being written and files waiting for upload);
  // 0: a quarter of the space free on the home's file system at mount time, at least 1 GiB.
  std::uint64_t writeback_bytes = 0;
  // How long unmounting keeps trying without progress before it leaves the rest to the journal.
  std::chrono::milliseconds unmount_wait{30000};
  // The malware check of every changed file before it is stored (README "Malicious files");
  // -o noscan turns it off, which the log says.
  bool scan = true;
  // Options passed to libfuse unchanged (allow_other, ro, ...).
  std::vector<std::string> fuse_options;
};

// Parses a comma-separated -o list: splitfs's own options (cache_size=SIZE with K/M/G suffixes,
// cache_dir=PATH, cache_dir_size=SIZE,
// readahead=N segments, attr_timeout=S, entry_timeout=S, refresh=S, commit_delay=S, log=PATH,
// home=DIR, writeback_size=SIZE, unmount_wait=S, debug, noscan) go into options, the rest into
// options.fuse_options. Throws splitfs::Error.
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
