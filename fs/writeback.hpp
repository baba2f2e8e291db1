// One regular file's uncommitted changes: a local sparse file (a named file in the mount's
// write-back folder under the client home, see journal.hpp) holding the segments that were
// written, over the file's committed content (the "base").
//
// A byte at offset o < size() is, for segment s = o / segment_bytes:
//   - in the local file, if s is local (written since the base, or filled from the base first);
//   - else the base's byte, if o is below the base's size and below every size the file was
//     truncated to since;
//   - else zero (a hole, or bytes a truncation cut off and an extension brought back).
// The local file never holds a non-zero byte at or past size(), and never holds bytes of a
// segment that is not local. A partial write into a segment that still has base bytes needs them
// first (base_needed(), then fill()), so that the segment can be committed whole.
//
// For a commit, a segment is reused from the base unchanged when it is not local and all its bytes
// are still the base's; everything else is built (build()) and uploaded. That is what makes a small
// edit to a large file send only the segments it touched.
//
// Write-behind: a local segment can be uploaded before the commit (stage()); from then on it is
// "staged": its bytes are those of its SegmentRef, its local copy is released (holes punched a
// block at a time, see release()), and the commit takes the ref as it is. Any change to a staged
// segment first brings its bytes back (fill()). Each local segment carries a version bumped by
// every change, so an upload of bytes that changed meanwhile is refused. This keeps the local file
// no larger than what is written but not yet uploaded. Not thread-safe: the mount holds the file's
// data lock around every call.
//
// Durability: freeze() makes the local file durable (fdatasync) and hands it over to the journal,
// which records state() beside it; from then on the file is never changed again: the next change
// first copies the local bytes into a fresh file (so the journaled version stays intact until the
// journal drops it). A new process resumes a journaled state over its file (the second
// constructor). A local file that was never frozen is removed with its WriteBack.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <splitfs/client.hpp>
#include <splitfs/errors.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::fs {

// A local disk failure of the write-back file, with its errno (ENOSPC, EIO, ...).
class WriteBackError : public LocalIoError {
 public:
  WriteBackError(const std::string& what, int code) : LocalIoError(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// A new, empty file "wb-XXXXXX" in dir, open for reading and writing: its descriptor and name.
// Throws WriteBackError.
std::pair<int, std::string> create_writeback_file(const std::filesystem::path& dir);

class WriteBack {
 public:
  // Where new local files come from: a descriptor open for reading and writing on an empty file in
  // the folder, and its name there. Throws WriteBackError.
  using FileSource = std::function<std::pair<int, std::string>()>;

  // What a journal keeps to resume a WriteBack in another process (segment versions excepted:
  // they restart).
  struct State {
    std::uint64_t base_size = 0;
    std::uint64_t valid_base = 0;
    std::uint64_t size = 0;
    std::set<std::uint64_t> local;
    std::map<std::uint64_t, SegmentRef> staged;
    bool dirty = false;
    friend bool operator==(const State&, const State&) = default;
  };

  // Takes a new local file in dir from source (without one: creates it). Throws WriteBackError.
  WriteBack(const std::filesystem::path& dir, std::uint32_t segment_bytes, std::uint64_t base_size,
            FileSource source = {});
  // Resumes `state` over the journaled local file dir/name (frozen: it stays the journal's).
  // Throws WriteBackError when the file cannot be opened or the state does not fit it.
  WriteBack(const std::filesystem::path& dir, std::uint32_t segment_bytes, const State& state,
            const std::string& name, FileSource source = {});
  ~WriteBack();
  WriteBack(const WriteBack&) = delete;
  WriteBack& operator=(const WriteBack&) = delete;

  // Starts over, clean, from a base of base_size bytes; empties the local file.
  void reset(std::uint64_t base_size);

  std::uint64_t size() const { return size_; }
  std::uint32_t segment_bytes() const { return segment_bytes_; }
  bool dirty() const { return dirty_; }
  // Bumped by every change of the content (write, truncate, fill, reset); never repeats.
  std::uint64_t changes() const { return changes_; }
  bool is_local(std::uint64_t segment) const { return local_.contains(segment); }
  std::size_t local_segments() const { return local_.size(); }
  // Bytes the local file holds on disk (its allocated blocks).
  std::uint64_t local_bytes() const;
  // Bytes of content the local file holds for local segments not staged yet (what the file
  // costs on disk, holes aside).
  std::uint64_t footprint() const;

  // Bytes the segment bookkeeping (local, staged and versioned segments) holds in memory, tree
  // nodes and allocator headers included: it grows with the file, about 240 bytes per segment.
  std::uint64_t memory_bytes() const;

  // How much footprint() grows by a write of [offset, offset + length) (its fills included).
  std::uint64_t growth(std::uint64_t offset, std::uint64_t length) const;

  State state() const;
  // Syncs the local file and hands it to the journal; returns its name in the folder. Changes
  // after this go to a fresh file (see above). Throws WriteBackError.
  std::string freeze();
  // freeze() without the sync, for a caller that syncs descriptor() itself before the journal
  // names the file.
  std::string freeze_unsynced();
  // -1 while there is no local file (after reset() of a frozen one, until the next change).
  int descriptor() const { return fd_; }
  // Undoes freeze_unsynced() when the journal did not take the file.
  void unfreeze() { frozen_ = false; }
  bool frozen() const { return frozen_; }
  // The local file's name in the folder.
  const std::string& file_name() const { return name_; }

  enum class Source { local, base, zero, staged };
  struct Span {
    std::uint64_t offset = 0;
    std::size_t length = 0;
    Source source = Source::zero;
  };
  // [offset, offset + length) clipped to size(), as spans each within one segment and one source.
  std::vector<Span> plan(std::uint64_t offset, std::uint64_t length) const;
  // Local bytes (zeros past the local file's end). Throws WriteBackError.
  void read_local(std::uint64_t offset, MutableByteView out) const;

  // Segments a write of [offset, offset + length) needs filled first: from the base, or from
  // their staged ref (see staged()).
  std::vector<std::uint64_t> base_needed(std::uint64_t offset, std::size_t length) const;
  // The segment a truncation to size needs filled first (a staged segment it cuts), if any.
  std::vector<std::uint64_t> truncate_needs(std::uint64_t size) const;
  // Makes segment s local: for a staged segment, bytes is the whole segment (its staged content);
  // otherwise its still-valid base bytes are copied out of bytes (the whole base segment s).
  void fill(std::uint64_t s, ByteView bytes);
  // Writes data at offset; base_needed() segments must have been filled. Throws WriteBackError
  // (ENOSPC and the like: the local disk).
  void write(std::uint64_t offset, ByteView data);
  void truncate(std::uint64_t size);

  // The segments of the current content.
  std::uint64_t segment_count() const;
  std::size_t segment_length(std::uint64_t s) const;
  // Whether segment s is base segment s unchanged (commit reuses its ref).
  bool reusable(std::uint64_t s) const;
  // Whether building segment s needs base segment s.
  bool build_needs_base(std::uint64_t s) const;

  // ---- write-behind ----

  // Keep: a staged segment's local bytes stay until the next reset() (a malware check reads them
  // at close, before the commit), and count in footprint(), unless release_checked() lets them go.
  void set_keep_staged(bool keep) { keep_staged_ = keep; }
  // With keep: the check has read [0, end) already, so staged segments wholly below it release
  // their local bytes now, and those staged later at once. A stream of writes then reuses a few
  // pages of the local file instead of filling memory with fresh ones. Kept until reset().
  void release_checked(std::uint64_t end);
  // Local bytes are released a block at a time, the largest folio the page cache makes for a
  // file (a huge page).
  static constexpr std::uint64_t kReleaseBlock = 2u << 20;
  // Whether the local file holds segment s's bytes (else they are its base's, its staged ref's,
  // or zeros).
  bool holds(std::uint64_t s) const {
    return is_local(s) && (!staged_.contains(s) || (keep_staged_ && !checked(s)));
  }

  // Local, unstaged, full-length segments in [from, below) (at most max of them, lowest first).
  std::vector<std::uint64_t> stageable(std::uint64_t from, std::uint64_t below,
                                       std::size_t max) const;
  // The version of local segment s (0 if not local).
  std::uint64_t version(std::uint64_t s) const;
  // Records that segment s, as of version, is stored as ref, and releases its local bytes.
  // False (nothing done) if s changed since or is not a local segment.
  bool stage(std::uint64_t s, std::uint64_t version, const SegmentRef& ref);
  // The ref of a staged segment, or nullptr.
  const SegmentRef* staged(std::uint64_t s) const;
  std::size_t staged_segments() const { return staged_.size(); }
  // Bytes of local segments not staged yet (what the local file holds, at most).
  std::uint64_t unstaged_bytes() const;
  // Segment s's current bytes; base_segment is base segment s when build_needs_base(s).
  void build(std::uint64_t s, ByteView base_segment, Bytes& out) const;

 private:
  std::uint64_t segment_start(std::uint64_t s) const { return s * segment_bytes_; }
  bool checked(std::uint64_t s) const { return segment_start(s + 1) <= checked_; }
  // Punches the local bytes of segments [first, last], which it no longer holds (a hole where
  // they were), as whole kReleaseBlock blocks.
  void release(std::uint64_t first, std::uint64_t last) const;
  // Forgets that s is staged (its bytes are local again, or gone).
  void drop_staged(std::uint64_t s);
  // A new, empty local file in dir_ (fd_ and name_ untouched). Throws WriteBackError.
  std::pair<int, std::string> create_file() const;
  // Before any change: a frozen file is left to the journal, its local bytes copied to a new one.
  void thaw(bool copy = true);

  std::filesystem::path dir_;
  std::string name_;
  bool frozen_ = false;
  FileSource source_;
  int fd_ = -1;
  std::uint32_t segment_bytes_;
  std::uint64_t base_size_ = 0;
  std::uint64_t valid_base_ = 0;
  std::uint64_t size_ = 0;
  void touch(std::uint64_t s) { versions_[s] = ++counter_; }

  std::set<std::uint64_t> local_;
  std::map<std::uint64_t, SegmentRef> staged_;  // local segments stored ahead of the commit
  // local_ without staged_: what stageable() walks, so a long sequential write does not walk all
  // it staged before at every write.
  std::set<std::uint64_t> unstaged_;
  std::map<std::uint64_t, std::uint64_t> versions_;  // of local segments
  std::uint64_t counter_ = 0;                        // versions never repeat, even across reset()
  bool dirty_ = false;
  bool keep_staged_ = false;
  std::uint64_t checked_ = 0;   // release_checked()
  std::uint64_t released_ = 0;  // with keep_staged_: the staged segments below checked_
  std::uint64_t changes_ = 0;
};

}  // namespace splitfs::fs
