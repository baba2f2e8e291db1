// The mount's durable write-back journal: what a close() promised but the servers do not hold yet,
// kept on the local disk so that a mount killed at any moment (kill -9, a crash, a power cut after
// the sync) loses nothing. The next mount of the store replays it before it serves.
//
// Layout, under the client home's writeback/ folder: one folder per running mount ("m-<pid>-<n>",
// held with flock(2) while the mount lives, so a second mount of the same home never touches it),
// holding
//   f-<ino>.rec   one pending file: its write-back state and base (JournalFile), next to
//   wb-XXXXXX     the local file with its written bytes (WriteBack),
//   spare-N       dropped records' files, reused for new records (never read),
//   wb-XXXXXX     also, emptied: dropped small data files, reused for new WriteBacks, and
//   tree.rec, tree-2.rec   the pending namespace change (JournalTree): the tree as last committed
//                 and as this mount has it, merged into the servers' tree on replay like any other
//                 change. Two slots written in place (a tree record is rewritten at every small
//                 file's close(); a new file each time costs the file system an inode), each with a
//                 sequence number and a CRC-32 of its record: the newest whole one counts. Writes
//                 go to one slot until a sync covers it; the next write then goes to the other, so
//                 the slot last synced is never overwritten before a newer one is durable.
// File records are replaced atomically (written to a temporary name, synced, renamed, folder
// synced), so a record is either the old or the new one, never half of each.
//
// Group commit (put_file_lazy): a record can also be put without waiting for the disk.
// Its data file, the record and the tree record are written (the page cache holds them, so a
// killed process loses nothing) and renamed into place at once; sync_pending() (a background
// syncer, every few tens of milliseconds) makes every record put so far durable with about one
// commit of the file system for the whole batch. A machine crash may lose what was put since the
// last sync_pending(); a record put that way carries a digest of its data, so that a replay after
// such a crash leaves out a record whose data did not reach the disk instead of uploading zeros.
// The data file a lazy put replaces stays until the sync, so the older version is never lost. A
// folder nobody holds is an orphan: a mount that ended without storing everything; the next mount
// claims it (renames it to a folder of its own first, so two mounts starting at once never both
// replay it), replays it, writes the result into its own folder and only then removes the orphan.
//
// Tree record after the close: a small new file's close() appends only the file's name to the
// tree record (TreeName, each with the slot's sequence and a CRC of its own), instead of
// rewriting the whole tree into it; the mount does so only where the record's tree has the
// file's directory already. A replay reads the newest whole slot and the names appended to it.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <splitfs/client.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/bytes.hpp"
#include "fs/tree.hpp"
#include "fs/writeback.hpp"

namespace splitfs::fs {

// One regular file's pending content.
struct JournalFile {
  std::uint64_t ino = 0;
  std::uint64_t sequence = 0;  // when it was journaled: uploads go in this order
  std::string data_name;       // the WriteBack's local file, in the same folder
  std::uint32_t segment_bytes = 0;
  std::uint64_t bytes = 0;  // local bytes the data file holds (counted against the bound)
  // The committed version the changes apply to (0: none, a new file).
  std::uint64_t base_version = 0;
  std::uint64_t base_size = 0;
  std::uint32_t base_segment_bytes = 0;
  std::vector<SegmentRef> base_segments;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  WriteBack::State state;
  // SHA-256 of the data file's bytes [0, state.size) (zeros past its end), for a record put
  // without a sync (see above); none for a record synced with its data.
  std::optional<std::array<std::uint8_t, 32>> data_digest;
  friend bool operator==(const JournalFile&, const JournalFile&) = default;
};

// The pending namespace change: merge_trees(base, local, servers' tree) replays it.
struct JournalTree {
  std::uint64_t base_version = 0;
  Tree base;
  Tree local;
  friend bool operator==(const JournalTree&, const JournalTree&) = default;
};

// A new regular file's name, appended to the tree record (see "Tree record after the close").
struct TreeName {
  std::uint64_t parent = 0;
  std::string name;
  std::uint64_t ino = 0;
  InodeRecord record;  // a regular file without xattrs
  friend bool operator==(const TreeName&, const TreeName&) = default;
};

Bytes encode_tree_name(const TreeName& name);
// False when the bytes are not a well-formed name of a regular file.
bool decode_tree_name(ByteView bytes, TreeName& out);
// Adds names, in order, to a journaled tree's local side: each under its directory, as
// "<name>.recovered-<ino>" where the name is taken, and in the root where the directory is not
// there (neither happens when the mount appended them; see Journal::append_tree_name()). An inode
// the tree has already is left alone. Returns how many went elsewhere than their own name.
std::size_t apply_tree_names(Tree& tree, const std::vector<TreeName>& names);

Bytes encode_journal_file(const JournalFile& file);
// False when the bytes are not a well-formed record.
bool decode_journal_file(ByteView bytes, JournalFile& out);
Bytes encode_journal_tree(const JournalTree& tree);
// The same from the trees' encode_tree() bytes.
Bytes encode_journal_tree(std::uint64_t base_version, ByteView base, ByteView local);
bool decode_journal_tree(ByteView bytes, JournalTree& out);

class Journal {
 public:
  // Creates and holds this process's folder under root (created if missing, mode 0700). Throws
  // LocalIoError.
  explicit Journal(const std::filesystem::path& root);
  // Lets the folder go: removed when it holds nothing pending, else left for the next mount.
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  const std::filesystem::path& root() const { return root_; }
  const std::filesystem::path& dir() const { return dir_; }

  // A folder of a mount that ended with changes pending, claimed by this process.
  struct Orphan {
    std::filesystem::path dir;
    int lock_fd = -1;
    std::optional<JournalTree> tree;
    std::vector<JournalFile> files;     // by sequence
    std::vector<std::string> problems;  // what could not be read, for the log
  };
  // Claims every folder under root that no running mount holds, and reads it.
  std::vector<Orphan> claim_orphans();
  // Links an orphan's data file into this folder; returns its name here. Throws LocalIoError.
  std::string adopt_data(const Orphan& orphan, const std::string& name);
  // Removes an orphan's folder (once what it held is in this journal). An orphan not released
  // stays claimed while this Journal lives, and is an orphan again for the next mount.
  void release_orphan(Orphan& orphan);

  // Records file (replacing ino's record; the data file of the record it replaces goes unless it
  // is the same file). Durable when it returns; returns the bytes the replaced record held.
  // Throws LocalIoError.
  std::uint64_t put_file(const JournalFile& file);
  // What put_file_synced() did: the bytes the replaced record held, and whether the record is
  // durable yet.
  struct SyncedPut {
    std::uint64_t replaced_bytes = 0;
    bool durable = true;
  };
  // put_file() of a record whose data file (open as data_fd) is not synced yet: the data file
  // and the record are synced at once (the file system commits them together), then the record
  // renamed into place and the folder synced. Throws LocalIoError when it fails before the
  // rename: nothing was replaced. Once renamed, the record is this journal's whatever follows:
  // when only the folder's sync fails, durable is false, the replaced data file stays (a crash
  // may bring back the old record) and the next sync_pending() syncs the folder again. A tree
  // naming the file goes after it (put_tree()): a tree naming a file with no record would show it
  // empty.
  SyncedPut put_file_synced(const JournalFile& file, int data_fd);
  // put_file_synced() without waiting for the disk (see "Group commit" above): file must carry
  // its data_digest. Survives the end of this process when it returns; durable after the next
  // sync_pending(). Returns the bytes the replaced record held. Throws LocalIoError. The tree
  // goes after it here too (put_tree_lazy() or append_tree_name()).
  std::uint64_t put_file_lazy(const JournalFile& file, int data_fd);
  // Makes everything put so far durable (about one file system commit for all of it), then
  // removes the data files lazy puts replaced. False when a sync failed (the records stay, and
  // the next call tries them again).
  bool sync_pending();
  // Records put lazily and not synced yet.
  std::size_t unsynced() const;
  // Drops ino's record and data file if the record is still `sequence`; returns the bytes it
  // held (0 if not dropped).
  std::uint64_t drop_file(std::uint64_t ino, std::uint64_t sequence);
  struct Drop {
    std::uint64_t ino = 0;
    std::uint64_t sequence = 0;
    // No WriteBack holds the record's data file any more: a small one is emptied and kept for
    // new_data_file() instead of removed.
    bool data_released = false;
  };
  // drop_file() of several records at once, with one sync of the folder; returns the bytes they
  // held.
  std::uint64_t drop_files(const std::vector<Drop>& files);
  // A new, empty data file for a WriteBack (see WriteBack::FileSource): one that drop_files()
  // kept when there is one, else a new one. Each new file costs the file system an inode, and on
  // ext4 without a journal that means a scan past every inode freed in the last minutes.
  // Throws WriteBackError.
  std::pair<int, std::string> new_data_file();
  // Removes the data files of records dropped since the last call. A dropped small file's data
  // waits for this (bounded in count and bytes): a file system without a journal (ext4 without
  // one) scans the inodes deleted in the last seconds at every file it creates, so deleting while
  // files are being created makes each creation slower. The mount calls it when idle.
  void sweep();
  // ino's current record: its sequence and data file name.
  std::optional<std::pair<std::uint64_t, std::string>> current(std::uint64_t ino) const;
  void put_tree(const JournalTree& tree);
  // put_tree() of encode_journal_tree() bytes without waiting for the disk, like
  // put_file_lazy(). Throws LocalIoError.
  void put_tree_lazy(const Bytes& tree_record);
  // Appends a new file's name to the tree record without waiting for the disk, like
  // put_file_lazy(). False (nothing written) when there is no tree record, or it holds
  // kMaxTreeNames names already: the caller writes a whole one. Throws LocalIoError.
  bool append_tree_name(const TreeName& name);
  static constexpr std::size_t kMaxTreeNames = 4096;
  void drop_tree();
  bool has_tree() const;
  std::size_t file_count() const;
  std::uint64_t bytes() const;

 private:
  struct Record {
    std::uint64_t sequence = 0;
    std::string data_name;
    std::uint64_t bytes = 0;
  };
  void write_atomically(const std::string& name, ByteView bytes);
  // Writes tree_record into the working slot (not synced). Throws LocalIoError.
  void write_tree_slot_locked(ByteView tree_record);
  // write_tree_slot_locked(), then the slot synced: durable when it returns. Throws LocalIoError.
  void put_tree_durably_locked(ByteView tree_record);
  // After a sync of the working slot that no write followed: it is the durable one now.
  void tree_slot_synced_locked();
  // A record written under a temporary name (not synced), to be renamed to its own.
  struct Temporary {
    int fd = -1;
    std::string name;
  };
  // Writes the record `name` into a spare record's file, or name + ".tmp" when there is none.
  // Throws LocalIoError.
  Temporary write_temporary(const std::string& name, ByteView bytes);
  // Removes the data file `name` (of `bytes`) now or at the next sweep().
  void bury_locked(const std::string& name, std::uint64_t bytes);
  // Removes the file record `name`, keeping its file as a spare ("spare-N", never read back).
  void retire_record_locked(const std::string& name);
  // Empties the dropped data file `name` (of `bytes`) for new_data_file(), or buries it.
  void retire_data_locked(const std::string& name, std::uint64_t bytes);
  void remove(const std::string& name);

  std::filesystem::path root_;
  std::filesystem::path dir_;
  int lock_fd_ = -1;
  int dir_fd_ = -1;
  std::vector<int> orphan_locks_;  // of orphans claimed and not released yet
  mutable std::mutex mutex_;
  std::map<std::uint64_t, Record> records_;
  bool tree_ = false;
  // Lazy puts waiting for sync_pending(): descriptors to sync (owned), and data files to remove
  // once they are synced.
  std::vector<int> unsynced_fds_;
  // The tree record's slots (see the top): descriptors (-1 until first written), the one written
  // next, the sequence of the last write, and whether it awaits a sync.
  std::array<int, 2> slot_fds_{-1, -1};
  int working_slot_ = 0;
  std::uint64_t tree_sequence_ = 0;
  bool tree_unsynced_ = false;
  // The slot holding the newest record, where names are appended: its end, how many it holds,
  // and whether an append awaits a sync.
  int newest_slot_ = 0;
  std::uint64_t names_end_ = 0;
  std::size_t names_ = 0;
  bool names_unsynced_ = false;
  std::size_t unsynced_records_ = 0;
  std::vector<std::string> removals_after_sync_;
  bool folder_unsynced_ = false;  // a rename into the folder awaits the folder's sync
  std::mutex sync_mutex_;         // one sync_pending() at a time; taken before mutex_
  std::vector<std::string> buried_;
  std::uint64_t buried_bytes_ = 0;
  std::vector<std::string> spare_records_;
  std::uint64_t next_spare_ = 0;
  std::vector<std::string> spare_data_;  // emptied data files, for new_data_file()
};

// The SHA-256 of a data file's bytes [0, size) (zeros past its end). Throws LocalIoError.
std::array<std::uint8_t, 32> digest_data_file(int fd, std::uint64_t size);

// What the journal folders hold: root (a writeback/ folder: every folder in it) or one folder.
struct JournalSummary {
  std::size_t files = 0;
  std::uint64_t bytes = 0;
  bool tree = false;
  std::vector<std::filesystem::path> dirs;  // the folders holding something
};
JournalSummary summarize_journal(const std::filesystem::path& path);

}  // namespace splitfs::fs
