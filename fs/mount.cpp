// The FUSE front of the mount (see mount.hpp for the contract).
//
// Locks, always taken in this order and never the other way round:
//   FileData::mutex (one file's data: its write-back file and committed base; may be held across
//   network calls) or commit_run_mutex_ (whoever commits the tree; never together with a
//   FileData::mutex) -> tree_journal_mutex_ (writing the journal's tree record) -> tree_mutex_
//   (the namespace and every inode's attributes; never held across a network call) -> the leaf
//   locks (handles_mutex_, inflight_mutex_, commit_mutex_, pending_mutex_, manifests_mutex_,
//   error_mutex_, the journal's, the client pool's, the log's).
// Committing the tree takes tree_mutex_ only for a snapshot, so a slow upload never blocks
// namespace changes, and a handler never waits for a commit while holding a lock. No thread waits
// for a FileData mutex while holding a pooled client. Kernel notifications (after merging another
// mount's changes) go out from a thread of their own: they can wait for kernel inode locks that a
// handler waiting for a commit holds.
#define FUSE_USE_VERSION 312

#include "fs/mount.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <linux/fs.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <splitfs/client.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "cache/disk_tier.hpp"
#include "cache/segment_cache.hpp"
#include "common/thread_cache.hpp"
#include "core/config.hpp"
#include "fs/journal.hpp"
#include "fs/mounts.hpp"
#include "fs/namespace.hpp"
#include "fs/probe.hpp"
#include "fs/remote.hpp"
#include "fs/syslog.hpp"
#include "fs/tree.hpp"
#include "fs/writeback.hpp"
#include "scan/quarantine.hpp"
#include "scan/scan.hpp"

namespace splitfs::fs {

namespace fsys = std::filesystem;

namespace {

// A thread named for top -H, perf and gdb (names are cut to 15 characters).
template <typename F>
std::thread named_thread(const char* name, F f) {
  std::thread thread(std::move(f));
  ::pthread_setname_np(thread.native_handle(), name);
  return thread;
}

using Clock = std::chrono::steady_clock;

// Inode numbers of the virtual control directory and its stats file: far above anything the
// tree hands out.
constexpr fuse_ino_t kControlIno = ~fuse_ino_t{0} - 1;
constexpr fuse_ino_t kStatsIno = ~fuse_ino_t{0} - 2;
// Inode numbers a mount reserves at a time.
constexpr std::uint64_t kInodeBlock = 1u << 16;
// Segments uploaded or downloaded per library call.
constexpr std::size_t kSegmentsPerBatch = 32;
constexpr std::size_t kClients = 6;
// Files the uploader commits at once (each on a client of its own).
constexpr std::size_t kDrainWorkers = 4;
// The uploader names the files of several rounds with one tree commit (each re-encodes the whole
// tree) while more files keep arriving: at most this many files or this long between tree commits.
constexpr std::size_t kTreeBatchFiles = 512;
constexpr auto kTreeBatchDelay = std::chrono::milliseconds(250);
// Meanwhile a round waits at most this long for this many files to share its requests.
constexpr auto kRoundWait = std::chrono::milliseconds(20);
constexpr std::size_t kRoundFiles = 16;
// The uploader stages the segments of several small files in requests of about this size.
constexpr std::uint64_t kPrestageBytes = 4u << 20;
// A new file at most this large is journaled at close() and uploaded with others (group commit)
// instead of costing its close() several round trips.
constexpr std::uint64_t kGroupCommitMaxBytes = 1u << 20;
// The journal's group commit (mount.hpp "Durability"): how often the syncer runs, how many
// unsynced records wake it early, and how many make a close() sync itself.
constexpr auto kSyncInterval = std::chrono::milliseconds(25);
constexpr std::size_t kSyncBatch = 128;
constexpr std::size_t kSyncBacklog = 1024;
constexpr std::size_t kReadaheadWorkers = 2;
// What a transfer of n segment bytes holds at its peak, in multiples of n: the segments, and the
// client's shares, sealed shares and frames of them. Charged to the cache budget while it runs.
constexpr std::size_t kTransferCopies = 4;
// What committing a file of n segments holds at its peak, in multiples of its segment list (68
// bytes a segment): the list and the client's copy of it, the manifest's shares, the manifest
// encoded and sealed, each server's commit (the sealed manifest and its share list) and its frame,
// and the committed object. Measured: 8 GB written at once, the resident set grew by ~12 times
// the list at the commit.
constexpr std::size_t kCommitCopies = 16;
// How often, at most, the allocator's free pages go back to the system while data flows; and a
// reservation from which they go back at once.
constexpr auto kTrimInterval = std::chrono::milliseconds(100);
constexpr std::size_t kTrimNowBytes = 8u << 20;
constexpr std::size_t kReadaheadQueue = 16;
// Write-behind: a file's bytes written but not uploaded yet stay below this; past it, a writer
// waits while its finished segments upload.
constexpr std::uint64_t kMaxUnstagedBytes = 64u << 20;
// The malware check follows a file written from empty at its end a part of this size at a time
// (scan::ScanAhead), so little is left to check when it closes.
constexpr std::uint64_t kScanAheadPart = 32u << 20;
// How long such a writer waits at most for one batch of the background upload.
constexpr auto kStageWait = std::chrono::seconds(15);
// Largest request the kernel sends (max_read, max_write).
constexpr std::uint32_t kMaxIo = 1u << 20;
// A read's reply goes out as its pieces up to this many (IOV_MAX is 1024), else as one buffer.
constexpr std::size_t kMaxReplyPieces = 512;
// While a server is away, it is probed this long after the failure, then at most kProbeMax apart:
// its return is noticed within a quarter of a second, for the cost of one small request.
constexpr auto kProbeFirst = std::chrono::milliseconds(100);
constexpr auto kProbeMax = std::chrono::milliseconds(250);
constexpr auto kProbeTimeout = std::chrono::milliseconds(2000);
// A pending file whose upload failed for another reason than an absent server waits this long.
constexpr auto kRetryFailing = std::chrono::seconds(5);
// commit_file(): not stored, but the changes are durable in the journal and will be uploaded.
constexpr int kPending = -1;
// A drain's file that the group commit left for commit_file().
constexpr int kUnsettled = -2;
// Segment lists of files the kernel forgot, kept so their cached data reads without the network.
constexpr std::size_t kManifestCacheSegments = 1u << 18;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

timespec to_timespec(std::int64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

std::int64_t from_timespec(const timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::string cache_key(const SegmentRef& ref) {
  std::string key;
  key.reserve(68);
  for (const auto& id : ref.shares)
    key.append(reinterpret_cast<const char*>(id.data()), id.size());
  for (int i = 3; i >= 0; --i)
    key.push_back(static_cast<char>(ref.length >> (8 * i)));
  return key;
}

// The errno a failure of the layers below means to a program.
int errno_of(const std::exception& e) {
  if (const auto* local = dynamic_cast<const WriteBackError*>(&e))
    return local->code() ? local->code() : EIO;
  if (dynamic_cast<const QuotaExceeded*>(&e))
    return EDQUOT;
  if (dynamic_cast<const std::bad_alloc*>(&e))
    return ENOMEM;
  return EIO;
}

// Inodes waiting for one worker thread (the write-behind stager, the check-ahead worker): pop()
// waits for the next, and gives none once stop() was called.
class InoQueue {
 public:
  void push(std::uint64_t ino) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(ino);
    }
    cv_.notify_one();
  }
  std::optional<std::uint64_t> pop() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_)
      return std::nullopt;
    const std::uint64_t ino = queue_.front();
    queue_.pop_front();
    return ino;
  }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::uint64_t> queue_;
  bool stop_ = false;
};

// Appends timestamped lines to the mount's log file (and stderr in the foreground), and sends the
// same words to the system log (ident "splitfs-mount"; the journal on systemd machines), without
// ever waiting for it (fs/syslog.hpp).
class Log {
 public:
  Log(const fsys::path& file, bool to_stderr)
      : to_stderr_(to_stderr), system_log_("splitfs-mount") {
    file_ = std::fopen(file.c_str(), "a");
  }
  ~Log() {
    if (file_)
      std::fclose(file_);
  }
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  void line(const std::string& text) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    localtime_r(&t, &tm);
    char stamp[40];
    const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
    std::snprintf(stamp + n, sizeof stamp - n, ".%03d", static_cast<int>(ms.count() % 1000));
    std::lock_guard lock(mutex_);
    if (file_) {
      std::fprintf(file_, "%s [%d] %s\n", stamp, static_cast<int>(::getpid()), text.c_str());
      std::fflush(file_);
    }
    if (to_stderr_)
      std::fprintf(stderr, "splitfs: %s\n", text.c_str());
    system_log_.send(text);
  }

  // Lines the system log had no room for.
  std::uint64_t dropped() const { return system_log_.dropped(); }

 private:
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
  bool to_stderr_;
  SystemLog system_log_;
};

// Clients for concurrent network calls: each Client runs one call at a time.
class ClientPool {
 public:
  ClientPool(const fsys::path& home, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      clients_.push_back(std::make_unique<Client>(home));
      free_.push_back(clients_.back().get());
    }
  }

  class Lease {
   public:
    Lease(ClientPool& pool, Client* client) : pool_(pool), client_(client) {}
    ~Lease() { pool_.give_back(client_); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Client* operator->() const { return client_; }
    Client& operator*() const { return *client_; }

   private:
    ClientPool& pool_;
    Client* client_;
  };

  Lease acquire() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !free_.empty(); });
    Client* c = free_.back();
    free_.pop_back();
    return Lease(*this, c);
  }

  TransferCounters counters() const {
    TransferCounters total;
    for (const auto& c : clients_) {
      const auto t = c->counters();
      total.bytes_sent += t.bytes_sent;
      total.shares_sent += t.shares_sent;
      total.shares_skipped += t.shares_skipped;
      total.bytes_received += t.bytes_received;
      total.commits += t.commits;
    }
    return total;
  }

 private:
  void give_back(Client* c) {
    {
      std::lock_guard lock(mutex_);
      free_.push_back(c);
    }
    cv_.notify_one();
  }

  std::vector<std::unique_ptr<Client>> clients_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Client*> free_;
};

// One regular file's data state.
struct FileData {
  std::mutex mutex;
  std::optional<StoredObject> base;  // the committed content this mount works from
  bool loaded = false;               // base matches the tree's content version (or is newer)
  std::unique_ptr<WriteBack> wb;     // created on the first change
  // Read without the mutex (under tree_mutex_): the committed content version, and the version
  // the kernel's page cache holds for this file.
  std::atomic<std::uint64_t> base_version{0};
  std::atomic<std::uint64_t> page_cache_version{0};
  // Write-behind (under mutex): where the last write ended, and whether an upload is queued.
  std::uint64_t last_write_end = 0;
  bool staging = false;
  // Whether a batch of the background upload is on its way (the worker clears it when it leaves
  // the file, however it leaves), and how many commits wait for it before they take over.
  bool stage_in_flight = false;
  std::size_t commits_waiting = 0;
  std::condition_variable staged_cv;  // a background upload staged a batch, or ended
  // The name create() gave it (for the journal's tree record; it may have changed since).
  std::uint64_t created_parent = 0;
  std::string created_name;
  // The journal record whose close appended the file's name to the tree record (0: none).
  std::uint64_t named_record = 0;
  // wb->changes() + 1 as of the last malware check that let the content through (0: none).
  std::uint64_t scanned_changes = 0;
  std::string scanned_path;
  // The malware check ahead of the writer (under mutex), kept while every change since the file
  // was empty was a write at its end: ahead_changes is wb->changes() after the last such write.
  // ahead_generation goes up whenever it is dropped, so that a part checked meanwhile is not
  // taken; ahead_busy: a part is queued or being checked.
  std::optional<scan::ScanAhead> ahead;
  std::uint64_t ahead_changes = 0;
  std::uint64_t ahead_generation = 0;
  bool ahead_busy = false;
  // What wb counts against the write-back bound (under mutex), and the mount's total it is part
  // of (journaled files count there through the journal).
  std::uint64_t accounted = 0;
  std::atomic<std::uint64_t>* total = nullptr;
  // The memory its segment lists (base and write-back bookkeeping) hold, charged to the cache
  // budget (under mutex).
  cache::SegmentCache::Reservation lists_room;

  FileData() = default;
  FileData(const FileData&) = delete;
  FileData& operator=(const FileData&) = delete;
  ~FileData() {
    if (total)
      total->fetch_sub(accounted);
  }
};

struct OpenFile {
  fuse_ino_t ino = 0;
  bool writable = false;
  std::string text;  // the stats file's content
  // Sequential-read detection for read-ahead.
  std::mutex mutex;
  std::uint64_t next_offset = 0;
  std::uint64_t readahead_until = 0;  // segments below this were queued
};

struct DirItem {
  std::string name;
  fuse_ino_t ino = 0;
  std::uint32_t mode = 0;
};

struct DirHandle {
  std::mutex mutex;
  std::vector<DirItem> items;
};

class Fs {
 public:
  explicit Fs(const MountOptions& options)
      : options_(options),
        log_(options.log_file.empty() ? options.home / "mount.log" : options.log_file,
             options.foreground || options.debug),
        pool_(options.home, kClients),
        cache_(options.cache_bytes),
        journal_(options.home / "writeback"),
        writeback_dir_(journal_.dir()) {
    auto client = pool_.acquire();
    segment_bytes_ = client->segment_bytes();
    manifests_room_ = cache_.reserve(0);
    if (!options.cache_dir.empty()) {
      disk_ = std::make_unique<cache::DiskTier>(options.cache_dir, options.cache_dir_bytes,
                                                client->local_key());
    }
    init_scan();
  }

  Log& log() { return log_; }

  // Loads (or creates) the tree and reserves inode numbers; before serving.
  void load() {
    auto client = pool_.acquire();
    std::optional<RemoteTree> remote = load_tree(*client);
    if (!remote) {
      Tree fresh = make_empty_tree(0755, ::getuid(), ::getgid(), now_ns());
      try {
        const StoredObject created = save_tree(*client, fresh, 0);
        remote = RemoteTree{std::move(fresh), created.version};
      } catch (const ConflictError&) {
        remote = load_tree(*client);  // another mount created it at the same moment
        if (!remote)
          throw;
      }
    }
    base_tree_ = remote->tree;
    tree_version_ = remote->version;
    ns_.emplace(std::move(remote->tree));
    auto orphans = replay_journals();
    reserve_inodes_now(*client);
    // What was replayed is in this mount's journal now; the folders it came from can go.
    for (auto& orphan : orphans)
      journal_.release_orphan(orphan);
    log_.line("mounted " + options_.mountpoint.string() + " (tree version " +
              std::to_string(tree_version_) + ")");
  }

  void start(fuse_session* se) {
    se_ = se;
    committer_ = named_thread("sfs-commit", [this] { commit_loop(); });
    for (std::size_t i = 0; i < kReadaheadWorkers; ++i)
      readahead_workers_.push_back(named_thread("sfs-readahead", [this] { readahead_loop(); }));
    stager_ = named_thread("sfs-stage", [this] { stage_loop(); });
    scan_aheader_ = named_thread("sfs-scan", [this] { scan_ahead_loop(); });
    notifier_ = named_thread("sfs-notify", [this] { notify_loop(); });
    uploader_ = named_thread("sfs-upload", [this] { upload_loop(); });
    syncer_ = named_thread("sfs-sync", [this] { sync_loop(); });
  }

  // The journal's group commit: syncs what closes put lazily, every kSyncInterval or as soon as
  // kSyncBatch records wait.
  void sync_loop() {
    for (;;) {
      {
        std::unique_lock lock(sync_mutex_);
        sync_cv_.wait_for(lock, kSyncInterval,
                          [this] { return sync_stop_ || journal_.unsynced() >= kSyncBatch; });
        if (sync_stop_)
          break;
      }
      if (!journal_.sync_pending())
        note_error("cannot sync the journal in " + journal_.dir().string());
      journal_syncs_.fetch_add(1, std::memory_order_relaxed);
    }
    journal_.sync_pending();
  }

  // After the session ends: stores what is pending while that makes progress; returns whether
  // everything made it (what did not stays in the journal for the next mount).
  bool stop() {
    {
      std::lock_guard lock(pending_mutex_);
      upload_stop_ = true;
    }
    upload_cv_.notify_all();
    if (uploader_.joinable())
      uploader_.join();
    {
      // The kernel will not forget anything any more: unlinked files still referenced are gone.
      std::unique_lock lock(tree_mutex_);
      ns_->drop_references();
      collect_gone();
    }
    // Files changed but not closed (or never flushed) join the queue.
    std::vector<std::uint64_t> changed;
    {
      std::shared_lock lock(tree_mutex_);
      for (const auto& [ino, committed] : dirty_content_)
        changed.push_back(ino);
    }
    for (const auto ino : changed)
      keep_pending(ino);
    const bool ok = finish_uploads();
    if (!ok) {
      write_tree_journal();
      const std::string what = std::to_string(journal_.file_count()) + " file(s), " +
                               std::to_string(journal_.bytes()) + " bytes";
      const std::string text = "unmounting with changes NOT on the servers yet (" + what +
                               (journal_.has_tree() ? ", and namespace changes" : "") +
                               "): they are kept in " + journal_.dir().string() +
                               " and the next mount of this store (home " + options_.home.string() +
                               ") uploads them";
      log_.line(text);
      std::fprintf(stderr, "splitfs: %s\n", text.c_str());
    } else {
      std::lock_guard lock(tree_journal_mutex_);
      journal_.drop_tree();
    }
    if (ok) {
      // Gone inodes the committed tree does not name (no commit was needed to drop them).
      std::unique_lock lock(tree_mutex_);
      std::lock_guard queue(removal_mutex_);
      for (const auto ino : pending_removal_) {
        if (!base_tree_.inodes.contains(ino))
          removal_queue_.push_back(ino);
      }
      pending_removal_.clear();
    }
    while (!servers_down_.load() && remove_contents(64) > 0) {
    }
    {
      std::lock_guard lock(commit_mutex_);
      stopping_ = true;
    }
    commit_cv_.notify_all();
    {
      std::lock_guard lock(readahead_mutex_);
      readahead_stop_ = true;
    }
    readahead_cv_.notify_all();
    stage_queue_.stop();
    if (stager_.joinable())
      stager_.join();
    scan_ahead_queue_.stop();
    if (scan_aheader_.joinable())
      scan_aheader_.join();
    {
      std::lock_guard lock(notify_mutex_);
      notify_stop_ = true;
    }
    notify_cv_.notify_all();
    if (notifier_.joinable())
      notifier_.join();
    if (committer_.joinable())
      committer_.join();
    for (auto& t : readahead_workers_)
      t.join();
    {
      std::lock_guard lock(sync_mutex_);
      sync_stop_ = true;
    }
    sync_cv_.notify_all();
    if (syncer_.joinable())
      syncer_.join();
    log_.line(ok ? "unmounted, everything stored" : "unmounted with changes NOT stored");
    return ok;
  }

  // Uploads the queue and commits the tree until done, or until unmount_wait passed without
  // progress. True when nothing is pending.
  bool finish_uploads() {
    auto last_progress = Clock::now();
    auto pause = kProbeFirst;
    std::uint64_t announced = 0;
    for (;;) {
      drop_gone_records();
      const std::size_t waiting = pending_count();
      std::uint64_t generation = 0;
      {
        std::shared_lock lock(tree_mutex_);
        generation = ns_->generation();
      }
      bool tree_done = false;
      {
        std::lock_guard lock(commit_mutex_);
        tree_done = committed_generation_ >= generation;
      }
      if (waiting == 0 && tree_done)
        return true;
      if (Clock::now() - last_progress > options_.unmount_wait)
        return false;
      if (waiting != announced) {
        log_.line("unmounting: " + std::to_string(waiting) + " file(s) still to upload");
        announced = waiting;
      }
      if (servers_down_.load()) {
        if (!probe_servers()) {
          std::this_thread::sleep_for(pause);
          pause = std::min<std::chrono::milliseconds>(pause * 2, kProbeMax);
          continue;
        }
        pause = kProbeFirst;
      }
      std::size_t stored = 0;
      if (waiting > 0)
        stored = drain(true);
      else if (sync_tree() == 0)
        stored = 1;
      if (stored > 0)
        last_progress = Clock::now();
      else
        std::this_thread::sleep_for(pause);
    }
  }

  // ---- FUSE operations ----

  void init(fuse_conn_info* conn) {
    conn->max_write = kMaxIo;
    conn->max_read = kMaxIo;
    conn->max_readahead = kMaxIo;
    // Locks are the kernel's, within this mount: no POSIX or flock lock handlers.
    conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_WRITEBACK_CACHE |
                    FUSE_CAP_ATOMIC_O_TRUNC);
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
      conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  }

  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
    if (parent == kRootIno && std::strcmp(name, kControlDir) == 0)
      return reply_virtual_entry(req, kControlIno);
    if (parent == kControlIno) {
      if (std::strcmp(name, kStatsFile) == 0)
        return reply_virtual_entry(req, kStatsIno);
      fuse_reply_err(req, ENOENT);
      return;
    }
    fuse_entry_param e{};
    {
      std::unique_lock lock(tree_mutex_);
      std::uint64_t ino = 0;
      if (int err = ns_->lookup(parent, name, ino)) {
        lock.unlock();
        if (err != ENOENT) {
          fuse_reply_err(req, err);
          return;
        }
        // A name that is not there is cached like one that is (ino 0): a `cp` asks for each
        // new name twice before creating it. A name that comes from another mount is
        // invalidated by rebase().
        e.entry_timeout = options_.entry_timeout;
        fuse_reply_entry(req, &e);
        return;
      }
      fill_entry(ino, e);
      ns_->add_lookup(ino);
    }
    fuse_reply_entry(req, &e);
  }

  void forget(fuse_ino_t ino, std::uint64_t n) {
    if (is_virtual(ino))
      return;
    std::unique_lock lock(tree_mutex_);
    ns_->forget(ino, n);
    collect_gone();
    // A file the kernel no longer knows, with nothing to store: its state can go (it is loaded
    // again on the next lookup).
    if (!ns_->referenced(ino) && !dirty_content_.contains(ino) && !is_pending(ino))
      files_.erase(ino);
  }

  void getattr(fuse_req_t req, fuse_ino_t ino) {
    struct stat st {};
    if (is_virtual(ino)) {
      virtual_attr(ino, st);
    } else {
      std::shared_lock lock(tree_mutex_);
      if (!ns_->find(ino)) {
        lock.unlock();
        fuse_reply_err(req, ENOENT);
        return;
      }
      fill_attr(ino, st);
    }
    fuse_reply_attr(req, &st, options_.attr_timeout);
  }

  void setattr(fuse_req_t req, fuse_ino_t ino, const struct stat* attr, int to_set) {
    if (is_virtual(ino)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    const std::int64_t now = now_ns();
    if (to_set & FUSE_SET_ATTR_SIZE) {
      std::uint32_t mode = 0;
      {
        std::shared_lock lock(tree_mutex_);
        const InodeRecord* rec = ns_->find(ino);
        mode = rec ? rec->mode : 0;
      }
      if (mode == 0 || !S_ISREG(mode)) {
        fuse_reply_err(req, mode == 0 ? ENOENT : S_ISDIR(mode) ? EISDIR : EINVAL);
        return;
      }
      if (int err = truncate(ino, static_cast<std::uint64_t>(attr->st_size), now)) {
        fuse_reply_err(req, err);
        return;
      }
    }
    struct stat st {};
    {
      std::unique_lock lock(tree_mutex_);
      InodeRecord* rec = ns_->find_mut(ino);
      if (!rec) {
        lock.unlock();
        fuse_reply_err(req, ENOENT);
        return;
      }
      if (to_set & FUSE_SET_ATTR_MODE)
        rec->mode = (rec->mode & S_IFMT) | (attr->st_mode & 07777);
      if (to_set & FUSE_SET_ATTR_UID)
        rec->uid = attr->st_uid;
      if (to_set & FUSE_SET_ATTR_GID)
        rec->gid = attr->st_gid;
      if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        rec->atime_ns = now;
      else if (to_set & FUSE_SET_ATTR_ATIME)
        rec->atime_ns = from_timespec(attr->st_atim);
      if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        rec->mtime_ns = now;
      else if (to_set & FUSE_SET_ATTR_MTIME)
        rec->mtime_ns = from_timespec(attr->st_mtim);
      rec->ctime_ns = now;
      ns_->changed();
      fill_attr(ino, st);
    }
    fuse_reply_attr(req, &st, options_.attr_timeout);
  }

  void readlink(fuse_req_t req, fuse_ino_t ino) {
    std::string target;
    {
      std::shared_lock lock(tree_mutex_);
      const InodeRecord* rec = is_virtual(ino) ? nullptr : ns_->find(ino);
      if (!rec || !S_ISLNK(rec->mode)) {
        lock.unlock();
        fuse_reply_err(req, rec ? EINVAL : ENOENT);
        return;
      }
      target = rec->target;
    }
    fuse_reply_readlink(req, target.c_str());
  }

  // mknod, mkdir, symlink and create all come here.
  void make(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev,
            const std::string& target, fuse_file_info* fi) {
    if (is_virtual(parent) || (parent == kRootIno && std::strcmp(name, kControlDir) == 0)) {
      fuse_reply_err(req, is_virtual(parent) ? EPERM : EEXIST);
      return;
    }
    const fuse_ctx* ctx = fuse_req_ctx(req);
    const Caller caller{ctx->uid, ctx->gid};
    fuse_entry_param e{};
    for (int attempt = 0;; ++attempt) {
      std::unique_lock lock(tree_mutex_);
      std::uint64_t ino = 0;
      const int err = ns_->create(parent, name, mode, rdev, target, caller, now_ns(), ino);
      if (err == Namespace::kNeedInodes && attempt == 0) {
        lock.unlock();
        if (int r = reserve_inodes()) {
          fuse_reply_err(req, r);
          return;
        }
        continue;
      }
      if (err) {
        lock.unlock();
        fuse_reply_err(req, err == Namespace::kNeedInodes ? ENOSPC : err);
        return;
      }
      ns_->add_lookup(ino);
      if (fi) {
        ns_->add_open(ino);
        auto data = file_data_locked(ino);
        data->loaded = true;  // new: no content yet
        data->created_parent = parent;
        data->created_name = name;
      }
      fill_entry(ino, e);
      break;
    }
    if (!fi) {
      fuse_reply_entry(req, &e);
      return;
    }
    auto handle = std::make_shared<OpenFile>();
    handle->ino = e.ino;
    handle->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
    fi->fh = add_handle(std::move(handle));
    fuse_reply_create(req, &e, fi);
  }

  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    if (is_virtual(ino) || is_virtual(parent) ||
        (parent == kRootIno && std::strcmp(name, kControlDir) == 0)) {
      fuse_reply_err(req, is_virtual(ino) || is_virtual(parent) ? EPERM : EEXIST);
      return;
    }
    fuse_entry_param e{};
    {
      std::unique_lock lock(tree_mutex_);
      if (int err = ns_->link(ino, parent, name, now_ns())) {
        lock.unlock();
        fuse_reply_err(req, err);
        return;
      }
      ns_->add_lookup(ino);
      fill_entry(ino, e);
    }
    fuse_reply_entry(req, &e);
  }

  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
    if (is_virtual(parent) || (parent == kRootIno && std::strcmp(name, kControlDir) == 0)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    int err = 0;
    {
      std::unique_lock lock(tree_mutex_);
      std::uint64_t ino = 0;
      err =
          dir ? ns_->rmdir(parent, name, now_ns(), ino) : ns_->unlink(parent, name, now_ns(), ino);
      collect_gone();
    }
    fuse_reply_err(req, err);
  }

  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
              const char* new_name, unsigned flags) {
    if (is_virtual(parent) || is_virtual(new_parent) ||
        (parent == kRootIno && std::strcmp(name, kControlDir) == 0) ||
        (new_parent == kRootIno && std::strcmp(new_name, kControlDir) == 0)) {
      fuse_reply_err(req, EPERM);
      return;
    }
    int err = 0;
    {
      std::unique_lock lock(tree_mutex_);
      std::uint64_t replaced = 0;
      err = ns_->rename(parent, name, new_parent, new_name, flags, now_ns(), replaced);
      collect_gone();
    }
    fuse_reply_err(req, err);
  }

  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto handle = std::make_shared<OpenFile>();
    handle->ino = ino;
    handle->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
    if (ino == kStatsIno) {
      if (handle->writable) {
        fuse_reply_err(req, EACCES);
        return;
      }
      handle->text = stats_text();
      fi->direct_io = 1;
      fi->fh = add_handle(std::move(handle));
      fuse_reply_open(req, fi);
      return;
    }
    if (is_virtual(ino)) {
      fuse_reply_err(req, EISDIR);
      return;
    }
    {
      std::unique_lock lock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      if (!rec) {
        lock.unlock();
        fuse_reply_err(req, ENOENT);
        return;
      }
      ns_->add_open(ino);
      auto data = file_data_locked(ino);
      const std::uint64_t version = rec->content_version;
      fi->keep_cache = data->page_cache_version.load() == version;
      data->page_cache_version = version;
    }
    fi->noflush = !handle->writable;
    fi->fh = add_handle(std::move(handle));
    fuse_reply_open(req, fi);
  }

  void read(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi) {
    const auto handle = find_handle(fi->fh);
    if (!handle) {
      fuse_reply_err(req, EBADF);
      return;
    }
    if (ino == kStatsIno) {
      const std::string& text = handle->text;
      const std::size_t from = std::min<std::size_t>(static_cast<std::size_t>(off), text.size());
      fuse_reply_buf(req, text.data() + from, std::min(size, text.size() - from));
      return;
    }
    ReadReply out;
    try {
      read_data(ino, static_cast<std::uint64_t>(off), size, *handle, out);
    } catch (const std::exception& e) {
      log_.line("read of inode " + std::to_string(ino) + " failed: " + e.what());
      fuse_reply_err(req, errno_of(e));
      return;
    }
    reads_.fetch_add(1, std::memory_order_relaxed);
    bytes_read_.fetch_add(out.size, std::memory_order_relaxed);
    if (out.iov.size() <= kMaxReplyPieces) {
      fuse_reply_iov(req, out.iov.data(), static_cast<int>(out.iov.size()));
      return;
    }
    // Finely interleaved local and stored bytes: one buffer (writev takes at most IOV_MAX).
    Bytes flat;
    flat.reserve(out.size);
    for (const iovec& piece : out.iov) {
      const auto* from = static_cast<const std::uint8_t*>(piece.iov_base);
      flat.insert(flat.end(), from, from + piece.iov_len);
    }
    fuse_reply_buf(req, reinterpret_cast<const char*>(flat.data()), flat.size());
  }

  void write(fuse_req_t req, fuse_ino_t ino, const char* buf, std::size_t size, off_t off) {
    if (is_virtual(ino)) {
      fuse_reply_err(req, EBADF);
      return;
    }
    const int err = write_data(ino, static_cast<std::uint64_t>(off),
                               ByteView(reinterpret_cast<const std::uint8_t*>(buf), size));
    if (err) {
      fuse_reply_err(req, err);
      return;
    }
    writes_.fetch_add(1, std::memory_order_relaxed);
    bytes_written_.fetch_add(size, std::memory_order_relaxed);
    fuse_reply_write(req, size);
  }

  void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    const auto handle = find_handle(fi->fh);
    int err = 0;
    if (handle && handle->writable && !is_virtual(ino))
      err = close_file(ino);
    fuse_reply_err(req, err);
  }

  // Durable on both servers, or an error: never 0 with the data only here.
  void fsync(fuse_req_t req, fuse_ino_t ino) {
    int err = is_virtual(ino) ? 0 : commit_file(ino);
    if (err == kPending)
      err = EIO;
    if (err == 0)
      err = sync_tree();
    fuse_reply_err(req, err);
  }

  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    const auto handle = take_handle(fi->fh);
    if (!is_virtual(ino)) {
      // Changes that arrived after the last flush (writes through a shared mapping).
      if (handle && handle->writable && close_file(ino) != 0)
        log_.line("inode " + std::to_string(ino) + ": changes kept, will retry at the next commit");
      std::unique_lock lock(tree_mutex_);
      ns_->release_open(ino);
      collect_gone();
    }
    fuse_reply_err(req, 0);
  }

  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    auto dir = std::make_shared<DirHandle>();
    if (ino == kControlIno) {
      dir->items = {
          {".", kControlIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}, {kStatsFile, kStatsIno, S_IFREG}};
    } else {
      std::shared_lock lock(tree_mutex_);
      if (int err = list_dir(ino, dir->items)) {
        lock.unlock();
        fuse_reply_err(req, err);
        return;
      }
    }
    std::lock_guard lock(handles_mutex_);
    const std::uint64_t id = next_handle_++;
    dirs_.emplace(id, std::move(dir));
    fi->fh = id;
    fuse_reply_open(req, fi);
  }

  void readdir(fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi,
               bool plus) {
    std::shared_ptr<DirHandle> dir;
    {
      std::lock_guard lock(handles_mutex_);
      const auto it = dirs_.find(fi->fh);
      if (it != dirs_.end())
        dir = it->second;
    }
    if (!dir) {
      fuse_reply_err(req, EBADF);
      return;
    }
    std::lock_guard dir_lock(dir->mutex);
    if (off == 0 && ino != kControlIno) {
      std::shared_lock lock(tree_mutex_);
      dir->items.clear();
      list_dir(ino, dir->items);  // rewinddir() sees changes
    }
    std::vector<char> buf(size);
    std::size_t used = 0;
    std::unique_lock lock(tree_mutex_, std::defer_lock);
    if (plus)
      lock.lock();
    for (std::size_t i = static_cast<std::size_t>(off); i < dir->items.size(); ++i) {
      const DirItem& item = dir->items[i];
      std::size_t n = 0;
      const bool dots = item.name == "." || item.name == "..";
      if (plus) {
        fuse_entry_param e{};
        if (is_virtual(item.ino)) {
          virtual_attr(item.ino, e.attr);
          e.ino = item.ino;
        } else if (dots || !ns_->find(item.ino)) {
          e.attr.st_ino = item.ino;
          e.attr.st_mode = item.mode;
        } else {
          fill_entry(item.ino, e);
        }
        n = fuse_add_direntry_plus(req, buf.data() + used, size - used, item.name.c_str(), &e,
                                   static_cast<off_t>(i + 1));
        if (n > size - used)
          break;
        if (e.ino != 0 && !dots && !is_virtual(item.ino))
          ns_->add_lookup(item.ino);
      } else {
        struct stat st {};
        st.st_ino = item.ino;
        st.st_mode = item.mode;
        n = fuse_add_direntry(req, buf.data() + used, size - used, item.name.c_str(), &st,
                              static_cast<off_t>(i + 1));
        if (n > size - used)
          break;
      }
      used += n;
    }
    if (plus)
      lock.unlock();
    fuse_reply_buf(req, buf.data(), used);
  }

  void releasedir(fuse_req_t req, fuse_file_info* fi) {
    {
      std::lock_guard lock(handles_mutex_);
      dirs_.erase(fi->fh);
    }
    fuse_reply_err(req, 0);
  }

  void fsyncdir(fuse_req_t req) { fuse_reply_err(req, sync_tree()); }

  void statfs(fuse_req_t req) {
    struct statvfs st {};
    st.f_bsize = segment_bytes_;
    st.f_frsize = 4096;
    st.f_blocks = 1ull << 40;  // the servers do not report capacity: a large, honest "unknown"
    st.f_bfree = st.f_bavail = 1ull << 40;
    st.f_files = kMaxInodes;
    {
      std::shared_lock lock(tree_mutex_);
      const std::uint64_t used = ns_->named_count();
      st.f_ffree = st.f_favail = kMaxInodes > used ? kMaxInodes - used : 0;
    }
    st.f_namemax = kMaxNameBytes;
    fuse_reply_statfs(req, &st);
  }

  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                std::size_t size, int flags) {
    const int err = [&] {
      if (is_virtual(ino))
        return EPERM;
      const std::string key(name);
      if (key.starts_with("system.posix_acl_"))
        return EOPNOTSUPP;  // ACLs would not be enforced
      if (key.size() > kMaxXattrNameBytes)
        return ERANGE;
      if (size > kMaxXattrValueBytes)
        return E2BIG;
      std::unique_lock lock(tree_mutex_);
      InodeRecord* rec = ns_->find_mut(ino);
      if (!rec)
        return ENOENT;
      const auto it = rec->xattrs.find(key);
      if ((flags & XATTR_CREATE) && it != rec->xattrs.end())
        return EEXIST;
      if ((flags & XATTR_REPLACE) && it == rec->xattrs.end())
        return ENODATA;
      std::size_t total = key.size() + size;
      for (const auto& [n, v] : rec->xattrs) {
        if (n != key)
          total += n.size() + v.size();
      }
      if (total > kMaxXattrTotalBytes)
        return ENOSPC;
      rec->xattrs[key].assign(value, size);
      rec->ctime_ns = now_ns();
      ns_->changed();
      return 0;
    }();
    fuse_reply_err(req, err);
  }

  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, std::size_t size) {
    std::string value;
    int err = 0;
    if (is_virtual(ino)) {
      err = ENODATA;
    } else {
      std::shared_lock lock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      if (!rec) {
        err = ENOENT;
      } else if (const auto it = rec->xattrs.find(name); it == rec->xattrs.end()) {
        err = ENODATA;
      } else {
        value = it->second;
      }
    }
    if (err)
      fuse_reply_err(req, err);
    else
      reply_sized(req, value, size);
  }

  void listxattr(fuse_req_t req, fuse_ino_t ino, std::size_t size) {
    std::string names;
    if (!is_virtual(ino)) {
      std::shared_lock lock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      if (!rec) {
        lock.unlock();
        fuse_reply_err(req, ENOENT);
        return;
      }
      for (const auto& [n, v] : rec->xattrs) {
        names += n;
        names.push_back('\0');
      }
    }
    reply_sized(req, names, size);
  }

  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
    int err = 0;
    if (is_virtual(ino)) {
      err = EPERM;
    } else {
      std::unique_lock lock(tree_mutex_);
      InodeRecord* rec = ns_->find_mut(ino);
      if (!rec) {
        err = ENOENT;
      } else if (rec->xattrs.erase(name) == 0) {
        err = ENODATA;
      } else {
        rec->ctime_ns = now_ns();
        ns_->changed();
      }
    }
    fuse_reply_err(req, err);
  }

 private:
  // ---- attributes ----

  static bool is_virtual(fuse_ino_t ino) { return ino == kControlIno || ino == kStatsIno; }

  void virtual_attr(fuse_ino_t ino, struct stat& st) const {
    st.st_ino = ino;
    st.st_mode = ino == kControlIno ? (S_IFDIR | 0555) : (S_IFREG | 0444);
    st.st_nlink = ino == kControlIno ? 2 : 1;
    st.st_uid = ::getuid();
    st.st_gid = ::getgid();
    st.st_blksize = 4096;
  }

  void reply_virtual_entry(fuse_req_t req, fuse_ino_t ino) {
    fuse_entry_param e{};
    e.ino = ino;
    e.generation = 1;
    virtual_attr(ino, e.attr);
    e.attr_timeout = e.entry_timeout = options_.attr_timeout;
    fuse_reply_entry(req, &e);
  }

  // Under tree_mutex_.
  void fill_attr(std::uint64_t ino, struct stat& st) const {
    const InodeRecord& r = *ns_->find(ino);
    st.st_ino = ino;
    st.st_mode = r.mode;
    st.st_nlink = ns_->nlink(ino);
    st.st_uid = r.uid;
    st.st_gid = r.gid;
    st.st_rdev = static_cast<dev_t>(r.rdev);
    st.st_size = static_cast<off_t>(S_ISDIR(r.mode) ? 4096 : r.size);
    st.st_blksize = static_cast<blksize_t>(kMaxIo);  // what cp and friends size their buffers by
    st.st_blocks = static_cast<blkcnt_t>((st.st_size + 511) / 512);
    st.st_atim = to_timespec(r.atime_ns);
    st.st_mtim = to_timespec(r.mtime_ns);
    st.st_ctim = to_timespec(r.ctime_ns);
  }

  void fill_entry(std::uint64_t ino, fuse_entry_param& e) const {
    e.ino = ino;
    e.generation = 1;
    fill_attr(ino, e.attr);
    e.attr_timeout = options_.attr_timeout;
    e.entry_timeout = options_.entry_timeout;
  }

  // Under tree_mutex_.
  int list_dir(fuse_ino_t ino, std::vector<DirItem>& items) const {
    const InodeRecord* rec = ns_->find(ino);
    if (!rec)
      return ENOENT;
    if (!S_ISDIR(rec->mode))
      return ENOTDIR;
    items.push_back({".", ino, S_IFDIR});
    items.push_back({"..", ns_->parent(ino), S_IFDIR});
    for (const auto& [name, child] : rec->entries) {
      const InodeRecord* c = ns_->find(child);
      items.push_back({name, child, c ? c->mode : 0});
    }
    return 0;
  }

  static void reply_sized(fuse_req_t req, const std::string& value, std::size_t size) {
    if (size == 0)
      fuse_reply_xattr(req, value.size());
    else if (size < value.size())
      fuse_reply_err(req, ERANGE);
    else
      fuse_reply_buf(req, value.data(), value.size());
  }

  // ---- handles ----

  std::uint64_t add_handle(std::shared_ptr<OpenFile> handle) {
    std::lock_guard lock(handles_mutex_);
    const std::uint64_t id = next_handle_++;
    files_open_.emplace(id, std::move(handle));
    return id;
  }

  std::shared_ptr<OpenFile> find_handle(std::uint64_t id) {
    std::lock_guard lock(handles_mutex_);
    const auto it = files_open_.find(id);
    return it == files_open_.end() ? nullptr : it->second;
  }

  std::shared_ptr<OpenFile> take_handle(std::uint64_t id) {
    std::lock_guard lock(handles_mutex_);
    const auto it = files_open_.find(id);
    if (it == files_open_.end())
      return nullptr;
    auto handle = std::move(it->second);
    files_open_.erase(it);
    return handle;
  }

  // ---- file data ----

  // Under tree_mutex_ (exclusive).
  std::shared_ptr<FileData> file_data_locked(std::uint64_t ino) {
    auto& slot = files_[ino];
    if (!slot) {
      slot = std::make_shared<FileData>();
      slot->lists_room = cache_.reserve(0);
      const InodeRecord* rec = ns_->find(ino);
      slot->page_cache_version = rec ? rec->content_version : 0;
    }
    return slot;
  }

  // The FileData of ino if it has one (nullptr: none, or forgotten since).
  std::shared_ptr<FileData> known_file_data(std::uint64_t ino) {
    std::shared_lock lock(tree_mutex_);
    const auto it = files_.find(ino);
    return it == files_.end() ? nullptr : it->second;
  }

  std::shared_ptr<FileData> file_data(std::uint64_t ino) {
    std::unique_lock lock(tree_mutex_);
    if (!ns_->find(ino))
      return nullptr;
    return file_data_locked(ino);
  }

  // Under data->mutex: makes data->base the content the tree names (or newer), unless this mount
  // has changes of its own on top of an older base (those commit, or conflict, first).
  void ensure_base(std::uint64_t ino, FileData& data) {
    std::uint64_t wanted = 0;
    {
      std::shared_lock lock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      wanted = rec ? rec->content_version : 0;
    }
    const bool changed = data.wb && data.wb->dirty();
    if (data.loaded && (changed || data.base_version.load() >= wanted))
      return;
    if (wanted == 0) {
      data.base.reset();
    } else if (auto known = known_manifest(ino); known && known->version >= wanted) {
      data.base = *known;  // the segment list as committed: no round trip
    } else {
      auto client = pool_.acquire();
      data.base = client->open_object(content_key(ino), wanted);
      remember_manifest(ino, *data.base);
    }
    data.base_version = data.base ? data.base->version : 0;
    data.loaded = true;
    if (data.wb)
      data.wb->reset(data.base ? data.base->size : 0);
    charge_lists(data);
    if (data.base) {
      std::unique_lock lock(tree_mutex_);
      if (InodeRecord* rec = ns_->find_mut(ino); rec && !dirty_content_.contains(ino)) {
        rec->size = data.base->size;
        rec->content_version = std::max(rec->content_version, data.base->version);
      }
    }
  }

  // Write-back files come from the journal, which reuses the small ones it dropped.
  WriteBack::FileSource data_files() {
    return [this] { return journal_.new_data_file(); };
  }

  void ensure_writeback(FileData& data) {
    if (!data.wb) {
      data.wb = std::make_unique<WriteBack>(writeback_dir_, segment_bytes_,
                                            data.base ? data.base->size : 0, data_files());
      data.wb->set_keep_staged(scanner_ != nullptr);
      drop_scan_ahead(data);
    }
  }

  // What a transfer of these segments holds at its peak (kTransferCopies).
  static std::size_t transfer_bytes(const std::vector<SegmentRef>& refs) {
    std::size_t bytes = 0;
    for (const auto& ref : refs)
      bytes += ref.length;
    return bytes * kTransferCopies;
  }

  // Segments by ref, from the cache or the servers (one batch); concurrent fetches of one
  // segment share the download.
  std::vector<cache::SegmentCache::Handle> get_segments(const std::vector<SegmentRef>& refs) {
    std::vector<cache::SegmentCache::Handle> out(refs.size());
    std::vector<std::size_t> fetch;
    std::vector<std::pair<std::size_t, std::shared_future<void>>> wait;
    std::vector<std::promise<void>> promises;
    std::vector<std::string> keys(refs.size());
    for (std::size_t i = 0; i < refs.size(); ++i) {
      keys[i] = cache_key(refs[i]);
      out[i] = cache_.lookup(keys[i]);
    }
    {
      std::lock_guard lock(inflight_mutex_);
      for (std::size_t i = 0; i < refs.size(); ++i) {
        if (out[i])
          continue;
        if (const auto it = inflight_.find(keys[i]); it != inflight_.end()) {
          wait.emplace_back(i, it->second);
          continue;
        }
        promises.emplace_back();
        inflight_.emplace(keys[i], promises.back().get_future().share());
        fetch.push_back(i);
      }
    }
    if (disk_ && !fetch.empty()) {
      // The disk tier (cache_dir) before the network.
      std::vector<std::size_t> missed;
      for (const std::size_t i : fetch) {
        if (auto bytes = disk_->get(keys[i]))
          out[i] = cache_.insert(keys[i], std::move(*bytes));
        else
          missed.push_back(i);
      }
      if (missed.size() != fetch.size()) {
        std::lock_guard lock(inflight_mutex_);
        for (std::size_t k = 0; k < fetch.size(); ++k) {
          if (out[fetch[k]]) {
            inflight_.erase(keys[fetch[k]]);
            promises[k].set_value();
          }
        }
        std::vector<std::promise<void>> still;
        for (std::size_t k = 0; k < fetch.size(); ++k) {
          if (!out[fetch[k]])
            still.push_back(std::move(promises[k]));
        }
        promises = std::move(still);
        fetch = std::move(missed);
      }
    }
    if (!fetch.empty()) {
      std::vector<SegmentRef> wanted;
      wanted.reserve(fetch.size());
      for (const std::size_t i : fetch)
        wanted.push_back(refs[i]);
      std::exception_ptr failure;
      try {
        auto room = cache_.reserve(transfer_bytes(wanted));
        auto client = pool_.acquire();
        auto data = client->read_segments(wanted);
        room.reset();  // the client's copies are gone; the segments are charged as they go in
        for (std::size_t k = 0; k < fetch.size(); ++k) {
          if (disk_)
            disk_->put(keys[fetch[k]], data[k]);
          out[fetch[k]] = cache_.insert(keys[fetch[k]], std::move(data[k]));
        }
      } catch (...) {
        failure = std::current_exception();
      }
      {
        std::lock_guard lock(inflight_mutex_);
        for (const std::size_t i : fetch)
          inflight_.erase(keys[i]);
      }
      for (auto& p : promises) {
        if (failure)
          p.set_exception(failure);
        else
          p.set_value();
      }
      if (failure)
        std::rethrow_exception(failure);
    }
    for (auto& [i, future] : wait) {
      future.get();
      out[i] = cache_.lookup(keys[i], false);
      if (!out[i]) {  // evicted already (a tiny cache): fetch it alone
        const std::vector<SegmentRef> one{refs[i]};
        auto room = cache_.reserve(transfer_bytes(one));
        auto client = pool_.acquire();
        auto data = client->read_segments(one);
        room.reset();
        out[i] = cache_.insert(keys[i], std::move(data[0]));
      }
    }
    return out;
  }

  // A read's bytes as pieces for one writev to the kernel: the cached segments themselves (pinned
  // until the reply is sent), local bytes and zeros, instead of a copy of them all in one buffer.
  struct ReadReply {
    std::vector<iovec> iov;
    std::vector<cache::SegmentCache::Handle> pinned;
    Bytes local;  // the local spans' bytes, back to back
    std::size_t size = 0;
    void add(const std::uint8_t* bytes, std::size_t length) {
      // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): writev's iovec is not const
      iov.push_back({const_cast<std::uint8_t*>(bytes), length});
    }
  };

  void read_data(std::uint64_t ino, std::uint64_t offset, std::size_t size, OpenFile& handle,
                 ReadReply& out) {
    const auto data = file_data(ino);
    if (!data)
      throw NotFound("inode gone");
    std::vector<SegmentRef> refs;        // base segments still to get
    std::vector<std::size_t> ref_spans;  // which span each ref serves
    std::vector<WriteBack::Span> spans;
    std::vector<SegmentRef> ahead;  // base segments to read ahead
    {
      std::lock_guard lock(data->mutex);
      ensure_base(ino, *data);
      const std::uint64_t base_size = data->base ? data->base->size : 0;
      if (data->wb) {
        spans = data->wb->plan(offset, size);
      } else {
        const std::uint64_t end =
            offset + std::min<std::uint64_t>(size, base_size > offset ? base_size - offset : 0);
        for (std::uint64_t at = offset; at < end;) {
          const std::uint64_t stop = std::min(end, (at / segment_bytes_ + 1) * segment_bytes_);
          spans.push_back({at, static_cast<std::size_t>(stop - at), WriteBack::Source::base});
          at = stop;
        }
      }
      std::size_t local = 0;  // local bytes and holes' zeros
      for (const auto& s : spans) {
        out.size += s.length;
        if (s.source == WriteBack::Source::local || s.source == WriteBack::Source::zero)
          local += s.length;
      }
      // Allocated once (zeroed), before any piece points into it.
      out.local.resize(local);
      std::size_t at = 0;
      for (std::size_t i = 0; i < spans.size(); ++i) {
        const auto& s = spans[i];
        if (s.source == WriteBack::Source::local) {
          data->wb->read_local(s.offset, MutableByteView(out.local.data() + at, s.length));
          at += s.length;
        } else if (s.source == WriteBack::Source::zero) {
          at += s.length;
        } else if (s.source == WriteBack::Source::base) {
          refs.push_back(data->base->segments[s.offset / segment_bytes_]);
          ref_spans.push_back(i);
        } else if (s.source == WriteBack::Source::staged) {
          refs.push_back(*data->wb->staged(s.offset / segment_bytes_));
          ref_spans.push_back(i);
        }
      }
      // Read-ahead on sequential reads of committed data.
      std::lock_guard hlock(handle.mutex);
      const bool sequential = offset == handle.next_offset;
      handle.next_offset = offset + out.size;
      if (sequential && data->base && !(data->wb && data->wb->dirty()) &&
          options_.readahead_segments > 0 && out.size > 0) {
        const std::uint64_t next = (offset + out.size - 1) / segment_bytes_ + 1;
        const std::uint64_t last = std::min<std::uint64_t>(data->base->segments.size(),
                                                           next + options_.readahead_segments);
        // Queue in steps of half a window, so the fetches stay ahead of the reader.
        if (handle.readahead_until < next + options_.readahead_segments / 2) {
          for (std::uint64_t s = std::max(next, handle.readahead_until); s < last; ++s)
            ahead.push_back(data->base->segments[s]);
          handle.readahead_until = std::max(handle.readahead_until, last);
        }
      } else if (!sequential) {
        handle.readahead_until = 0;
      }
    }
    if (!ahead.empty())
      queue_readahead(std::move(ahead));
    if (!refs.empty())
      out.pinned = get_segments(refs);
    // The pieces in file order: cached segments themselves, local bytes and zeros.
    std::size_t local_at = 0;
    std::size_t k = 0;
    for (std::size_t i = 0; i < spans.size(); ++i) {
      const auto& s = spans[i];
      if (k < ref_spans.size() && ref_spans[k] == i) {
        const ByteView segment = out.pinned[k++].bytes();
        const std::size_t from = static_cast<std::size_t>(s.offset % segment_bytes_);
        if (from + s.length > segment.size())
          throw IntegrityError("a segment is shorter than its file says");
        out.add(segment.data() + from, s.length);
      } else {
        out.add(out.local.data() + local_at, s.length);
        local_at += s.length;
      }
    }
    if (!refs.empty())
      trim_memory();
    // relatime: record an access only when the last one is older than the last change or a day.
    std::unique_lock lock(tree_mutex_);
    if (InodeRecord* rec = ns_->find_mut(ino)) {
      const std::int64_t now = now_ns();
      if (rec->atime_ns <= rec->mtime_ns || rec->atime_ns <= rec->ctime_ns ||
          now - rec->atime_ns > 86'400'000'000'000) {
        rec->atime_ns = now;
      }
    }
  }

  // Under data.mutex: brings the bytes of segments a change needs into the write-back file, from
  // their staged upload or from the base.
  void fill_segments(FileData& data, const std::vector<std::uint64_t>& segments) {
    if (segments.empty())
      return;
    std::vector<SegmentRef> refs;
    for (const auto s : segments) {
      const SegmentRef* staged = data.wb->staged(s);
      refs.push_back(staged ? *staged : data.base->segments[s]);
    }
    const auto got = get_segments(refs);
    for (std::size_t k = 0; k < segments.size(); ++k)
      data.wb->fill(segments[k], got[k].bytes());
  }

  // Under data.mutex, after a write of [offset, end): uploads finished segments ahead of the
  // commit. A sequential writer's segments go in the background; a writer past kMaxUnstagedBytes
  // waits while some go now, which bounds the local write-back file.
  void write_behind(std::uint64_t ino, FileData& data, std::unique_lock<std::mutex>& lock,
                    std::uint64_t offset, std::uint64_t end) {
    const bool sequential = offset == data.last_write_end;
    data.last_write_end = end;
    const std::uint64_t finished = end / segment_bytes_;  // segments wholly before the write end
    // With the malware check on, segments upload as they are written too: shares staged before
    // the verdict are safe (encrypted, and referenced by nothing until the commit, which waits
    // for the check); their local bytes stay until the check has read them (set_keep_staged,
    // release_checked).
    if (servers_down_.load())
      return;  // the bytes wait in the write-back area, within its bound
    if (data.wb->unstaged_bytes() > kMaxUnstagedBytes) {
      if (data.staging) {
        // The background upload is on it: wait for it rather than send its segments twice.
        data.staged_cv.wait_for(lock, kStageWait, [&] {
          return !data.staging || !data.wb || data.wb->unstaged_bytes() <= kMaxUnstagedBytes;
        });
        return;
      }
      try {
        stage_some(data, data.wb->segment_count(), kSegmentsPerBatch);
      } catch (const std::exception& e) {
        // The write itself is done; its bytes are uploaded with the commit.
        network_failed(e);
      }
      return;
    }
    if (sequential && !data.staging && !data.wb->stageable(0, finished, 1).empty()) {
      data.staging = true;
      stage_queue_.push(ino);
    }
  }

  // What uploading these segments of wb holds at its peak (kTransferCopies).
  static std::size_t staging_bytes(const WriteBack& wb, const std::vector<std::uint64_t>& picks) {
    std::size_t bytes = 0;
    for (const auto s : picks)
      bytes += wb.segment_length(s);
    return bytes * kTransferCopies;
  }

  // Segments of a file read out of its write-back file for upload, as of their versions, with
  // what their transfer is charged to the cache budget.
  struct StageBatch {
    std::vector<std::uint64_t> picks;
    std::vector<std::uint64_t> versions;
    std::vector<Bytes> bytes;
    cache::SegmentCache::Reservation room;
  };

  // Under data.mutex: up to max stageable segments in [from, below), charged `charges` times
  // their transfer (no picks when there are none).
  StageBatch take_stageable(FileData& data, std::uint64_t from, std::uint64_t below,
                            std::size_t max, std::size_t charges) {
    StageBatch batch;
    batch.picks = data.wb->stageable(from, below, max);
    if (batch.picks.empty())
      return batch;
    batch.room = cache_.reserve(charges * staging_bytes(*data.wb, batch.picks));
    batch.bytes.resize(batch.picks.size());
    for (std::size_t k = 0; k < batch.picks.size(); ++k) {
      data.wb->build(batch.picks[k], {}, batch.bytes[k]);
      batch.versions.push_back(data.wb->version(batch.picks[k]));
    }
    return batch;
  }

  // Uploads segments on a client of the pool; their refs.
  std::vector<SegmentRef> upload_segments(const std::vector<Bytes>& segments) {
    const std::vector<ByteView> views(segments.begin(), segments.end());
    auto client = pool_.acquire();
    return client->stage_segments(views);
  }

  // Under data.mutex: uploads up to max stageable segments below `below`, holding the lock (the
  // caller waits). Returns how many were staged.
  std::size_t stage_some(FileData& data, std::uint64_t below, std::size_t max) {
    StageBatch batch = take_stageable(data, 0, below, max, 1);
    if (batch.picks.empty())
      return 0;
    const auto refs = upload_segments(batch.bytes);
    batch.room.reset();  // the client's copies are gone; the segments are charged as they go in
    return record_staged(*data.wb, batch.picks, batch.versions, refs, batch.bytes);
  }

  // Under the file's mutex: records uploaded segments (those unchanged since they were read) in
  // wb and keeps their bytes in the cache. Returns how many.
  std::size_t record_staged(WriteBack& wb, const std::vector<std::uint64_t>& picks,
                            const std::vector<std::uint64_t>& versions,
                            const std::vector<SegmentRef>& refs, std::vector<Bytes>& bytes) {
    std::size_t staged = 0;
    for (std::size_t k = 0; k < picks.size(); ++k) {
      if (wb.stage(picks[k], versions[k], refs[k])) {
        cache_.insert(cache_key(refs[k]), std::move(bytes[k]));
        ++staged;
      }
    }
    segments_staged_.fetch_add(staged, std::memory_order_relaxed);
    return staged;
  }

  // The write-behind worker: uploads a sequential writer's finished segments, without holding
  // the file's lock while they travel.
  void stage_loop() {
    while (const std::optional<std::uint64_t> ino = stage_queue_.pop()) {
      const auto data = known_file_data(*ino);
      if (!data)
        continue;
      try {
        if (!servers_down_.load())
          stage_in_background(*data);
        trim_memory();
      } catch (const std::exception& e) {
        network_failed(e);
        log_.line("uploading ahead for inode " + std::to_string(*ino) + " failed (the commit " +
                  "will try again): " + e.what());
      }
      std::lock_guard lock(data->mutex);
      data->staging = false;
      data->stage_in_flight = false;
      data->staged_cv.notify_all();
    }
  }

  // Two batches travel at once: the client prepares one (shares, their ids, sealing) while the
  // servers take the other in, instead of each side waiting for the other. Each is charged twice
  // its transfer: allocated while the other's buffers come and go, they leave holes in the heap
  // that the allocator keeps (peak RSS writing 2 GiB: 325 MB charged once, 297 MB twice; 311 MB
  // with one batch at a time).
  void stage_in_background(FileData& data) {
    struct Batch {
      StageBatch taken;  // its bytes travel with the upload and come back with it
      Joined<std::pair<std::vector<SegmentRef>, std::vector<Bytes>>> upload;
    };
    std::optional<Batch> pending;
    std::uint64_t from = 0;  // past the segments already on their way
    for (;;) {
      std::optional<Batch> next;
      {
        std::lock_guard lock(data.mutex);
        if (data.wb && data.commits_waiting == 0) {
          StageBatch taken = take_stageable(data, from, data.last_write_end / segment_bytes_,
                                            kSegmentsPerBatch, 2);
          if (!taken.picks.empty()) {
            from = taken.picks.back() + 1;
            next.emplace(Batch{std::move(taken), {}});
            data.stage_in_flight = true;
          }
        }
      }
      if (next) {
        next->upload = upload_threads_.run([this, bytes = std::move(next->taken.bytes)]() mutable {
          auto refs = upload_segments(bytes);
          return std::pair(std::move(refs), std::move(bytes));
        });
      }
      if (pending) {
        auto [refs, staged] = pending->upload.get();
        pending->taken.room.reset();
        std::lock_guard lock(data.mutex);
        data.stage_in_flight = next.has_value();
        data.staged_cv.notify_all();
        if (data.wb) {
          record_staged(*data.wb, pending->taken.picks, pending->taken.versions, refs, staged);
          account(data);
        }
      }
      if (!next)
        return;
      pending = std::move(next);
    }
  }

  // Under data->mutex and tree_mutex_: remember the committed content of a file about to change.
  void note_dirty_locked(std::uint64_t ino, const FileData& data) {
    if (!dirty_content_.contains(ino)) {
      dirty_content_[ino] = {data.base ? data.base->size : 0, data.base_version.load()};
    }
  }

  int write_data(std::uint64_t ino, std::uint64_t offset, ByteView bytes) {
    const auto data = file_data(ino);
    if (!data)
      return ENOENT;
    try {
      std::unique_lock lock(data->mutex);
      ensure_base(ino, *data);
      ensure_writeback(*data);
      if (int err = reserve_writeback(ino, *data, data->wb->growth(offset, bytes.size())))
        return err;
      const std::uint64_t size_before = data->wb->size();
      const std::uint64_t changes_before = data->wb->changes();
      fill_segments(*data, data->wb->base_needed(offset, bytes.size()));
      data->wb->write(offset, bytes);
      // Before write_behind, which may let go of the lock: nothing else changes the file between
      // the write and what the check ahead makes of it.
      scan_ahead_after(ino, *data, offset, size_before, changes_before);
      write_behind(ino, *data, lock, offset, offset + bytes.size());
      account(*data);
      std::unique_lock tlock(tree_mutex_);
      note_dirty_locked(ino, *data);
      if (InodeRecord* rec = ns_->find_mut(ino)) {
        rec->size = data->wb->size();
        rec->mtime_ns = rec->ctime_ns = now_ns();
      }
      return 0;
    } catch (const std::exception& e) {
      log_.line("write to inode " + std::to_string(ino) + " failed: " + e.what());
      return errno_of(e);
    }
  }

  int truncate(std::uint64_t ino, std::uint64_t size, std::int64_t now) {
    const auto data = file_data(ino);
    if (!data)
      return ENOENT;
    try {
      std::lock_guard lock(data->mutex);
      ensure_base(ino, *data);
      ensure_writeback(*data);
      if (size == data->wb->size())
        return 0;
      fill_segments(*data, data->wb->truncate_needs(size));
      data->wb->truncate(size);
      account(*data);
      std::unique_lock tlock(tree_mutex_);
      note_dirty_locked(ino, *data);
      if (InodeRecord* rec = ns_->find_mut(ino)) {
        rec->size = size;
        rec->mtime_ns = rec->ctime_ns = now;
      }
      return 0;
    } catch (const std::exception& e) {
      log_.line("truncate of inode " + std::to_string(ino) + " failed: " + e.what());
      return errno_of(e);
    }
  }

  // Stores a file's changed segments and commits its new version. 0 or an errno.
  int commit_file(std::uint64_t ino) {
    const auto start = Clock::now();
    const int result = commit_file_timed(ino);
    file_commit_us_.fetch_add(elapsed_us(start), std::memory_order_relaxed);
    return result;
  }

  static std::uint64_t elapsed_us(Clock::time_point start) {
    return static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start).count());
  }

  int commit_file_timed(std::uint64_t ino) {
    const auto data = known_file_data(ino);
    if (!data)
      return 0;
    std::unique_lock lock(data->mutex);
    if (!data->wb || !data->wb->dirty())
      return 0;
    std::uint32_t mode = 0;
    std::int64_t mtime = 0;
    {
      std::shared_lock tlock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      if (!rec || ns_->is_orphan(ino))
        return 0;  // nobody can name it again: its content goes with it
      mode = rec->mode & 07777;
      mtime = rec->mtime_ns;
    }
    if (const int blocked = scan_before_store(ino, *data, false); blocked != 0)
      return blocked;
    // A batch of the background upload on its way lands first rather than go up twice (or be
    // asked about); it starts no more meanwhile.
    ++data->commits_waiting;
    data->staged_cv.wait(lock, [&] { return !data->stage_in_flight; });
    --data->commits_waiting;
    if (!data->wb || !data->wb->dirty())
      return 0;
    WriteBack& wb = *data->wb;
    std::vector<SegmentRef> refs;
    try {
      refs = stage_file(*data);
    } catch (const std::exception& e) {
      log_.line("storing inode " + std::to_string(ino) + " failed: " + e.what());
      return file_failed(ino, *data, e);
    }
    ObjectAttributes attributes{wb.size(), segment_bytes_, mode, mtime};
    StoredObject committed;
    try {
      // A large file's segment list is copied several times over on its way (several MB for a
      // file of a few GB): charged to the cache budget meanwhile. The entries that makes room
      // for are scattered segments, no place for those copies: their pages go back to the
      // system first, so that the copies take their place in the resident set, not beside it.
      const auto room = cache_.reserve(refs.size() * sizeof(SegmentRef) * kCommitCopies);
      if (room.bytes() >= kTrimNowBytes)
        trim_memory(true);
      auto client = pool_.acquire();
      try {
        committed = client->commit_object(content_key(ino), data->base_version, attributes, refs);
      } catch (const ConflictError&) {
        // A newer version exists. If it holds exactly these bytes (refs name content), it is
        // this mount's own earlier attempt that reached the HTTPS server only: commit again on
        // top of it, which brings both servers to one version. Anything else is another writer.
        const StoredObject current = client->open_object(content_key(ino), data->base_version);
        if (current.size != attributes.size || current.segments != refs)
          throw;
        committed = client->commit_object(content_key(ino), current.version, attributes, refs);
      }
    } catch (const ConflictError&) {
      return keep_conflict_copy(ino, *data, attributes, std::move(refs));
    } catch (const std::exception& e) {
      log_.line("committing inode " + std::to_string(ino) + " failed: " + e.what());
      return file_failed(ino, *data, e);
    }
    committed_locked(ino, *data, std::move(committed));
    return 0;
  }

  // Under data.mutex: the file's changes are committed as `committed`; it becomes the base.
  void committed_locked(std::uint64_t ino, FileData& data, StoredObject committed) {
    files_committed_.fetch_add(1, std::memory_order_relaxed);
    remember_manifest(ino, committed);
    data.base = std::move(committed);
    data.base_version = data.base->version;
    data.page_cache_version = data.base->version;
    try {
      data.wb->reset(data.base->size);
    } catch (const std::exception& e) {
      // Stored and committed all the same; the next change tries a fresh file again.
      log_.line("inode " + std::to_string(ino) + ": " + e.what());
    }
    account(data);
    std::unique_lock tlock(tree_mutex_);
    dirty_content_.erase(ino);
    if (InodeRecord* rec = ns_->find_mut(ino)) {
      rec->content_version = data.base->version;
      rec->size = data.base->size;
    }
    ns_->changed();
  }

  // Group commit of small files whose segments are all on the servers already (prestaged): one
  // commit request per server for all of them, instead of one each. Sets results[i] for each
  // file it settles (committed, or nothing left to commit); the others stay kUnsettled, for
  // commit_file() to commit alone (it also tells why the batch did not take one). A file whose
  // lock is taken is left to commit_file() too: holding some files' locks, this never waits for
  // another's.
  void commit_small_files(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& batch,
                          std::vector<int>& results) {
    const auto start = Clock::now();
    struct Held {
      std::size_t index;
      std::shared_ptr<FileData> data;
      std::unique_lock<std::mutex> lock;
    };
    std::vector<Held> held;
    std::vector<ObjectCommit> commits;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::uint64_t ino = batch[i].first;
      std::shared_ptr<FileData> data;
      std::uint32_t mode = 0;
      std::int64_t mtime = 0;
      {
        std::shared_lock lock(tree_mutex_);
        const auto it = files_.find(ino);
        const InodeRecord* rec = ns_->find(ino);
        if (it == files_.end() || !rec || ns_->is_orphan(ino))
          continue;
        data = it->second;
        mode = rec->mode & 07777;
        mtime = rec->mtime_ns;
      }
      std::unique_lock lock(data->mutex, std::try_to_lock);
      if (!lock.owns_lock())
        continue;
      const WriteBack* wb = data->wb.get();
      if (!wb || !wb->dirty() || wb->size() > kGroupCommitMaxBytes)
        continue;
      std::vector<SegmentRef> refs;
      if (!held_refs(*data, refs).empty() || scan_before_store(ino, *data, false) != 0)
        continue;  // commit_file() stores the rest, or reports the block
      commits.push_back({content_key(ino), data->base_version,
                         ObjectAttributes{wb->size(), segment_bytes_, mode, mtime},
                         std::move(refs)});
      held.push_back({i, std::move(data), std::move(lock)});
    }
    if (held.size() < 2)
      return;  // nothing to share
    std::vector<std::optional<StoredObject>> committed;
    try {
      committed = pool_.acquire()->commit_objects(commits);
    } catch (const std::exception&) {
      return;  // commit_file() meets the same trouble, and handles it
    }
    for (std::size_t k = 0; k < held.size(); ++k) {
      if (!committed[k])
        continue;
      committed_locked(batch[held[k].index].first, *held[k].data, std::move(*committed[k]));
      results[held[k].index] = 0;
      files_committed_together_.fetch_add(1, std::memory_order_relaxed);
    }
    file_commit_us_.fetch_add(elapsed_us(start), std::memory_order_relaxed);
  }

  // Under data.mutex: a file whose changes could not be stored. They go to the journal and the
  // upload queue; kPending when only the servers' absence stopped them (retried as soon as both
  // are back), else the errno for the caller (retried every kRetryFailing).
  int file_failed(std::uint64_t ino, FileData& data, const std::exception& e) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    const bool absent = network_failed(e);
    const int kept = keep_pending_locked(ino, data);
    if (!absent) {
      mark_failing(ino);
    } else {
      std::lock_guard lock(pending_mutex_);
      if (const auto it = pending_.find(ino); it != pending_.end())
        it->second.failing = false;
    }
    if (kept != 0)
      return kept;
    return absent ? kPending : errno_of(e);
  }

  // Under data.mutex: the refs of the file's segments the servers hold already (staged, or the
  // base's where unchanged), in refs; returns the segments still to upload.
  static std::vector<std::uint64_t> held_refs(const FileData& data, std::vector<SegmentRef>& refs) {
    const WriteBack& wb = *data.wb;
    refs.assign(wb.segment_count(), SegmentRef{});
    std::vector<std::uint64_t> todo;
    for (std::uint64_t s = 0; s < refs.size(); ++s) {
      if (const SegmentRef* staged = wb.staged(s))
        refs[s] = *staged;
      else if (wb.reusable(s))
        refs[s] = data.base->segments[s];
      else
        todo.push_back(s);
    }
    return todo;
  }

  // Under data.mutex: uploads the segments that changed; returns the refs of all segments.
  std::vector<SegmentRef> stage_file(FileData& data) {
    const WriteBack& wb = *data.wb;
    std::vector<SegmentRef> refs;
    const std::vector<std::uint64_t> todo = held_refs(data, refs);
    // Build the next batch while the current one uploads.
    struct Batch {
      std::vector<Bytes> segments;
      cache::SegmentCache::Reservation room;
    };
    auto build = [&](std::size_t first) {
      const std::size_t n = std::min(kSegmentsPerBatch, todo.size() - first);
      Batch batch{std::vector<Bytes>(n),
                  cache_.reserve(staging_bytes(
                      wb, std::vector<std::uint64_t>(
                              todo.begin() + static_cast<std::ptrdiff_t>(first),
                              todo.begin() + static_cast<std::ptrdiff_t>(first + n))))};
      std::vector<SegmentRef> base_refs;
      std::vector<std::size_t> base_of;
      for (std::size_t k = 0; k < n; ++k) {
        if (wb.build_needs_base(todo[first + k])) {
          base_refs.push_back(data.base->segments[todo[first + k]]);
          base_of.push_back(k);
        }
      }
      const auto bases =
          base_refs.empty() ? std::vector<cache::SegmentCache::Handle>() : get_segments(base_refs);
      std::size_t b = 0;
      for (std::size_t k = 0; k < n; ++k) {
        const bool with_base = b < base_of.size() && base_of[b] == k;
        wb.build(todo[first + k], with_base ? bases[b++].bytes() : ByteView(), batch.segments[k]);
      }
      return batch;
    };
    auto upload = [this](Batch batch) {
      auto staged = upload_segments(batch.segments);
      batch.room.reset();
      // What was just written is what will most likely be read next.
      for (std::size_t k = 0; k < batch.segments.size(); ++k)
        cache_.insert(cache_key(staged[k]), std::move(batch.segments[k]));
      return staged;
    };
    if (!todo.empty() && todo.size() <= kSegmentsPerBatch) {
      // One batch: nothing to overlap, so no thread for it.
      const auto staged = upload(build(0));
      for (std::size_t k = 0; k < staged.size(); ++k)
        refs[todo[k]] = staged[k];
      return refs;
    }
    Joined<std::vector<SegmentRef>> inflight;
    std::size_t inflight_first = 0;
    for (std::size_t first = 0; first < todo.size(); first += kSegmentsPerBatch) {
      auto batch = build(first);
      if (inflight.valid()) {
        const auto staged = inflight.get();
        for (std::size_t k = 0; k < staged.size(); ++k)
          refs[todo[inflight_first + k]] = staged[k];
      }
      inflight = upload_threads_.run(
          [&upload, batch = std::move(batch)]() mutable { return upload(std::move(batch)); });
      inflight_first = first;
    }
    if (inflight.valid()) {
      const auto staged = inflight.get();
      for (std::size_t k = 0; k < staged.size(); ++k)
        refs[todo[inflight_first + k]] = staged[k];
    }
    return refs;
  }

  // Another mount committed this file since this mount read it. This mount's bytes go to a new
  // file beside it; the file itself now shows the other version.
  int keep_conflict_copy(std::uint64_t ino, FileData& data, const ObjectAttributes& attributes,
                         std::vector<SegmentRef> refs) {
    conflicts_.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t copy = 0;
    std::string copy_name;
    std::uint64_t parent = 0;
    {
      std::unique_lock tlock(tree_mutex_);
      std::string name;
      for (const auto& [dir_ino, dir] : ns_->snapshot().inodes) {
        for (const auto& [n, child] : dir.entries) {
          if (child == ino && parent == 0) {
            parent = dir_ino;
            name = n;
          }
        }
      }
      char host[64] = "host";
      ::gethostname(host, sizeof host - 1);
      const InodeRecord* rec = ns_->find(ino);
      for (int n = 1; parent != 0 && rec && copy == 0 && n < 1000; ++n) {
        copy_name = name.substr(0, 160) + ".conflict-" + host + "-" + std::to_string(::getpid()) +
                    "-" + std::to_string(n);
        const int err = ns_->create(parent, copy_name, rec->mode, 0, {}, Caller{rec->uid, rec->gid},
                                    now_ns(), copy);
        if (err != 0 && err != EEXIST)
          break;
      }
    }
    // The kernel may hold that name as absent (lookup() answers absent names with an entry).
    if (copy != 0 && se_)
      queue_invalidations({{parent, copy_name}}, {});
    if (copy == 0) {
      log_.line("inode " + std::to_string(ino) +
                " was changed by another mount and no conflict copy could be made");
      return EIO;
    }
    try {
      auto client = pool_.acquire();
      const StoredObject stored =
          client->commit_object(content_key(copy), 0, attributes, std::move(refs));
      std::unique_lock tlock(tree_mutex_);
      if (InodeRecord* rec = ns_->find_mut(copy)) {
        rec->content_version = stored.version;
        rec->size = stored.size;
        rec->mtime_ns = attributes.mtime_ns;
      }
      dirty_content_.erase(ino);
      ns_->changed();
    } catch (const std::exception& e) {
      log_.line("storing the conflict copy of inode " + std::to_string(ino) +
                " failed: " + e.what());
      return errno_of(e);
    }
    log_.line("inode " + std::to_string(ino) + " was changed by another mount; this mount's " +
              "version is kept as " + copy_name);
    // The next open drops the kernel's pages of this mount's version.
    data.loaded = false;
    data.wb->reset(0);
    data.page_cache_version = 0;
    return 0;
  }

  // ---- the malware check before a file is stored (README "Malicious files") ----

  // In the constructor: the scanner the home's [scan] settings ask for, unless -o noscan. Rules
  // that do not compile fail the mount.
  void init_scan() {
    if (!options_.scan) {
      const std::string text =
          "warning: -o noscan: files written here are stored WITHOUT a malware check";
      log_.line(text);
      std::fprintf(stderr, "splitfs: %s\n", text.c_str());
      return;
    }
    scan_config_ = core::load_scan_config(options_.home);
    scanner_ = scan::Scanner::shared(scan_config_.settings);
  }

  // Under data.mutex: forgets the check ahead, and any part of it being checked now.
  static void drop_scan_ahead(FileData& data) {
    data.ahead.reset();
    ++data.ahead_generation;
  }

  // Under data.mutex, after a write at offset to a file of size_before bytes whose write-back
  // file had changes_before changes: keeps the check ahead while the file grows from empty by
  // writes at its end (anything else drops it), and queues its next part once that is written.
  void scan_ahead_after(std::uint64_t ino, FileData& data, std::uint64_t offset,
                        std::uint64_t size_before, std::uint64_t changes_before) {
    if (!scanner_ || !scanner_->scans_ahead())
      return;
    const WriteBack& wb = *data.wb;
    if (!data.ahead || offset != size_before || changes_before != data.ahead_changes) {
      drop_scan_ahead(data);
      if (offset != 0 || size_before != 0)
        return;
      data.ahead.emplace();
    }
    data.ahead_changes = wb.changes();
    if (data.ahead_busy || !part_written(data.ahead->covered(), whole_segments_bytes(wb)))
      return;
    data.ahead_busy = true;
    scan_ahead_queue_.push(ino);
  }

  std::uint64_t whole_segments_bytes(const WriteBack& wb) const {
    return wb.size() / segment_bytes_ * segment_bytes_;
  }

  // Whether the part checked ahead from `from` is written, with the overlap read past its end,
  // in a file whose first `written` bytes are final.
  static bool part_written(std::uint64_t from, std::uint64_t written) {
    return written >= from + kScanAheadPart + scan::kScanOverlap;
  }

  // The check-ahead worker: checks the next parts of a file while it is written, holding the
  // file's lock only to copy a segment out. A part of bytes that changed meanwhile is dropped.
  void scan_ahead_loop() {
    while (const std::optional<std::uint64_t> ino = scan_ahead_queue_.pop()) {
      const auto data = known_file_data(*ino);
      while (data && scan_ahead_part(*data)) {
      }
    }
  }

  // Checks the next part of data's file, if it is written; false when there is none (or the
  // check ahead was dropped), and then data.ahead_busy is cleared.
  bool scan_ahead_part(FileData& data) {
    std::uint64_t generation = 0;
    std::uint64_t from = 0;
    std::uint64_t limit = 0;
    {
      std::lock_guard lock(data.mutex);
      if (data.ahead && data.wb) {
        from = data.ahead->covered();
        limit = whole_segments_bytes(*data.wb);
        generation = data.ahead_generation;
      }
      if (!part_written(from, limit)) {  // also without ahead or wb
        data.ahead_busy = false;
        return false;
      }
    }
    scan::ScanAhead part(from);
    // Whether the check at close reads these bytes again (ClamAV): then they stay local. The file
    // only grows while it is checked ahead, past a size limit too.
    const bool reread = scanner_->rereads_ahead(limit);
    bool checked = false;
    try {
      scan::SegmentSource source(limit, segment_bytes_, [&](std::uint64_t s, Bytes& out) {
        std::lock_guard lock(data.mutex);
        if (data.ahead_generation != generation || !data.wb || data.wb->size() < limit ||
            !data.wb->is_local(s)) {
          throw std::runtime_error("the file changed");
        }
        data.wb->build(s, {}, out);
      });
      scanner_->scan_ahead(source, from + kScanAheadPart, part);
      checked = true;
    } catch (const std::exception&) {
      // Changed, or unreadable: the check at close reads these bytes.
    }
    std::lock_guard lock(data.mutex);
    if (!checked || data.ahead_generation != generation || !data.ahead ||
        !data.ahead->append(std::move(part))) {
      data.ahead_busy = false;
      return false;
    }
    scanned_ahead_bytes_.fetch_add(kScanAheadPart, std::memory_order_relaxed);
    // Unless it reads them again, the check at close reads no more of what is checked and
    // uploaded: its local bytes go.
    if (!reread && data.wb && data.ahead_changes == data.wb->changes()) {
      data.wb->release_checked(data.ahead->covered());
      account(data);
    }
    return true;
  }

  // The path of ino in the mount (one of its names), for messages and name checks.
  std::string path_of(std::uint64_t ino) {
    std::shared_lock lock(tree_mutex_);
    return ns_->path_of(ino);
  }

  // close_file() of a file the journal keeps for later: scanned now when its bytes are at hand,
  // else at its upload.
  int scan_at_close(std::uint64_t ino) {
    const auto data = known_file_data(ino);
    if (!data)
      return 0;
    std::lock_guard lock(data->mutex);
    return scan_before_store(ino, *data, true);
  }

  // Under data.mutex, before a changed file's bytes go anywhere: scans its whole content (the
  // write-back file over its base, a segment at a time). 0 to go on. When the policy blocks it:
  // a copy goes to quarantine, the log says what and where, the change is dropped (the file
  // shows its last stored content again) and EACCES is returned; nothing of it was sent.
  int scan_before_store(std::uint64_t ino, FileData& data, bool at_close) {
    if (!scanner_ || !data.wb || !data.wb->dirty())
      return 0;
    const WriteBack& wb = *data.wb;
    const std::string path = path_of(ino);
    if (data.scanned_changes == wb.changes() + 1 && data.scanned_path == path)
      return 0;  // checked (at close) under this name, and unchanged since
    scan::SegmentSource source(
        wb.size(), segment_bytes_,
        [&](std::uint64_t s, Bytes& out) {
          const auto from = [&](const SegmentRef& ref) {
            const auto got = get_segments({ref});
            const ByteView bytes = got.at(0).bytes();
            out.assign(bytes.begin(), bytes.end());
          };
          if (const SegmentRef* staged = wb.staged(s); staged && !wb.holds(s)) {
            from(*staged);
          } else if (wb.reusable(s)) {
            from(data.base->segments[s]);
          } else if (wb.build_needs_base(s)) {
            const auto base = get_segments({data.base->segments[s]});
            wb.build(s, base.at(0).bytes(), out);
          } else {
            wb.build(s, {}, out);
          }
        },
        /*concurrent_loads=*/true);  // const reads of wb under data.mutex, and the cache
    // Parts checked ahead count only if nothing but writes at the end came after them.
    const scan::ScanAhead* ahead =
        data.ahead && data.ahead_changes == wb.changes() ? &*data.ahead : nullptr;
    scan::Verdict verdict;
    try {
      verdict = scanner_->scan(source, path, ahead);
    } catch (const std::exception& e) {
      if (at_close)
        return 0;  // its upload scans it
      log_.line("checking " + path + " for malware failed: " + e.what());
      return file_failed(ino, data, e);
    }
    const scan::Action action = scan_config_.policy.decide(verdict.severity);
    if (action == scan::Action::allow) {
      data.scanned_changes = wb.changes() + 1;
      data.scanned_path = path;
      return 0;
    }
    const scan::Finding& worst = *verdict.worst();
    const std::string found = verdict.summary() + " (detector " + worst.detector + ", rule " +
                              worst.rule + "): " + worst.detail;
    if (action == scan::Action::warn) {
      log_.line("malware check: " + path + ": " + found + "; stored anyway (policy: warn)");
      data.scanned_changes = wb.changes() + 1;
      data.scanned_path = path;
      return 0;
    }
    std::string kept;
    try {
      scan::Quarantine quarantine(scan_config_.quarantine, scan_config_.quarantine_max_bytes);
      const scan::QuarantineEntry entry = quarantine.keep(source, "mount", path, verdict);
      kept = entry.data.empty() ? "its bytes are not kept (" + entry.not_kept + ")"
                                : "the copy is kept in quarantine at " + entry.data.string();
    } catch (const std::exception& e) {
      kept = std::string("it could not be recorded in quarantine: ") + e.what();
    }
    const std::string text = "malware check blocked " + path + ": " + found +
                             "; not stored (close fails with EACCES), " + kept;
    log_.line(text);
    note_error(text);
    try {
      data.wb->reset(data.base ? data.base->size : 0);
    } catch (const std::exception& e) {
      log_.line("inode " + std::to_string(ino) + ": " + e.what());
    }
    data.page_cache_version = 0;  // the next open drops the kernel's pages of the blocked bytes
    account(data);
    {
      std::unique_lock tlock(tree_mutex_);
      dirty_content_.erase(ino);
      if (InodeRecord* rec = ns_->find_mut(ino))
        rec->size = data.base ? data.base->size : 0;
      ns_->changed();
    }
    if (se_)
      queue_invalidations({}, {ino});
    return EACCES;
  }

  core::ScanConfig scan_config_;
  std::shared_ptr<scan::Scanner> scanner_;  // null with -o noscan

  // ---- durable write-back: the journal and the upload queue ----

  // Under data.mutex: what data counts against the write-back bound now. A frozen write-back
  // file counts through its journal record instead.
  void account(FileData& data) {
    charge_lists(data);
    const std::uint64_t now = data.wb && !data.wb->frozen() ? data.wb->footprint() : 0;
    data.total = &writeback_used_;
    if (now >= data.accounted)
      writeback_used_.fetch_add(now - data.accounted);
    else
      writeback_used_.fetch_sub(data.accounted - now);
    data.accounted = now;
  }

  // Under data.mutex: charges what the file's segment lists hold to the cache budget.
  void charge_lists(FileData& data) {
    std::size_t bytes = data.base ? data.base->segments.capacity() * sizeof(SegmentRef) : 0;
    if (data.wb)
      bytes += data.wb->memory_bytes();
    data.lists_room.resize(bytes);
  }

  // Under data.mutex, before a change that grows the write-back area by `growth` bytes: 0 if it
  // fits, after uploading the file's finished segments when the servers answer; else ENOSPC.
  int reserve_writeback(std::uint64_t ino, FileData& data, std::uint64_t growth) {
    const auto fits = [&] { return writeback_used_.load() + growth <= options_.writeback_bytes; };
    if (fits())
      return 0;
    try {
      // Not before a malware check: nothing of a file leaves until it is scanned.
      while (!fits() && !servers_down_.load() && !scanner_ &&
             stage_some(data, data.wb->segment_count(), kSegmentsPerBatch) > 0) {
        account(data);
      }
    } catch (const std::exception& e) {
      network_failed(e);
    }
    account(data);
    if (fits())
      return 0;
    const std::string text =
        "the write-back area is full (" + std::to_string(writeback_used_.load()) + " of " +
        std::to_string(options_.writeback_bytes) + " bytes, -o writeback_size): inode " +
        std::to_string(ino) + " cannot grow until pending uploads reach the servers";
    note_error(text);
    log_.line(text);
    return ENOSPC;
  }

  void note_error(const std::string& text) {
    std::string line = text;
    std::replace(line.begin(), line.end(), '\n', ' ');
    std::lock_guard lock(error_mutex_);
    last_error_ = std::move(line);
  }

  // Records a failure for the stats. True when it says a server is away: then closes keep their
  // files in the journal and uploads wait until a probe finds both servers back.
  bool network_failed(const std::exception& e) {
    note_error(e.what());
    const bool absent = dynamic_cast<const ServerUnavailable*>(&e) != nullptr;
    if (absent && !servers_down_.exchange(true)) {
      log_.line(std::string("a server is unavailable, changes are kept locally until both "
                            "answer: ") +
                e.what());
      {
        std::lock_guard lock(pending_mutex_);  // the uploader is waiting, or sees the flag
      }
      upload_cv_.notify_all();
    }
    return absent;
  }

  bool is_pending(std::uint64_t ino) {
    std::lock_guard lock(pending_mutex_);
    return pending_.contains(ino);
  }

  // Files not stored yet, and those stored whose journal space is being released: until then a
  // write may still find the write-back area full.
  std::size_t pending_count() {
    std::lock_guard lock(pending_mutex_);
    return pending_.size() + releasing_ + gone_records_.size();
  }

  // Under pending_mutex_: whether a pending upload may be tried now.
  bool has_due_locked() const {
    const auto now = Clock::now();
    return std::any_of(pending_.begin(), pending_.end(),
                       [&](const auto& p) { return p.second.not_before <= now; });
  }

  // Whether a close() joins the queue instead of storing at once: a server is away, or files
  // closed before wait for their upload (which goes in order).
  bool should_defer() {
    if (servers_down_.load())
      return true;
    std::lock_guard lock(pending_mutex_);
    return std::any_of(pending_.begin(), pending_.end(),
                       [](const auto& p) { return !p.second.failing; });
  }

  void enqueue(std::uint64_t ino, std::uint64_t sequence) {
    {
      std::lock_guard lock(pending_mutex_);
      const auto [it, added] = pending_.try_emplace(ino);
      it->second.sequence = sequence;
      if (added)
        pending_order_.push_back(ino);
      // A round gathering files wakes once enough have come, not at every one.
      if (gathering_ && ++gathered_ < kRoundFiles)
        return;
    }
    upload_cv_.notify_all();
  }

  // close() of a file opened for writing: stored and committed now; or, while a server is away
  // or earlier files wait, durable in the journal and queued for upload. 0 or an errno.
  int close_file(std::uint64_t ino) {
    if (should_defer() || small_new_file(ino)) {
      // Stored later, but the malware check answers this close() now.
      if (const int blocked = scan_at_close(ino); blocked != 0)
        return blocked;
      bool named = false;
      if (const int err = keep_pending(ino, &named); err != 0)
        return err;
      // Also a file with nothing to upload (a new empty one) keeps its name; a small file's
      // close() goes with the group commit (see mount.hpp "Durability").
      if (named)
        return 0;
      return tree_uncommitted() && !write_tree_journal(!small_file(ino)) ? EIO : 0;
    }
    const int err = commit_file(ino);
    if (err == kPending)
      return 0;
    if (err != 0)
      return err;
    if (sync_tree() != 0)
      return write_tree_journal() ? 0 : EIO;
    return 0;
  }

  // Whether ino is a new file (no committed content yet) of at most kGroupCommitMaxBytes with
  // changes to store: its close() goes through the journal and the group commit.
  bool small_new_file(std::uint64_t ino) {
    const auto data = known_file_data(ino);
    if (!data)
      return false;
    std::lock_guard lock(data->mutex);
    return data->wb && data->wb->dirty() && data->base_version.load() == 0 &&
           data->wb->size() <= kGroupCommitMaxBytes;
  }

  // Whether ino's content is at most kGroupCommitMaxBytes (its journaling is lazy).
  bool small_file(std::uint64_t ino) {
    const auto data = known_file_data(ino);
    if (!data)
      return true;
    std::lock_guard lock(data->mutex);
    return !data->wb || data->wb->size() <= kGroupCommitMaxBytes;
  }

  bool tree_uncommitted() {
    std::uint64_t generation = 0;
    {
      std::shared_lock lock(tree_mutex_);
      generation = ns_->generation();
    }
    std::lock_guard lock(commit_mutex_);
    return committed_generation_ < generation;
  }

  int keep_pending(std::uint64_t ino, bool* named = nullptr) {
    const auto data = known_file_data(ino);
    if (!data)
      return 0;
    std::lock_guard lock(data->mutex);
    return keep_pending_locked(ino, *data, named);
  }

  // Under data.mutex: makes the file's changes durable in the journal (its write-back file
  // synced, its record written, then the tree that names it) and queues its upload. 0 or an
  // errno (the local disk failed: the changes are still in memory and the write-back file).
  // *named: the journal's tree record names the file by an appended name (it is not current).
  int keep_pending_locked(std::uint64_t ino, FileData& data, bool* named = nullptr) {
    if (!data.wb || !data.wb->dirty())
      return 0;
    std::uint32_t mode = 0;
    std::int64_t mtime = 0;
    {
      std::shared_lock lock(tree_mutex_);
      const InodeRecord* rec = ns_->find(ino);
      if (!rec || ns_->is_orphan(ino))
        return 0;  // nobody can name it again: its content goes with it
      mode = rec->mode & 07777;
      mtime = rec->mtime_ns;
    }
    try {
      const auto current = journal_.current(ino);
      if (data.wb->frozen() && current && current->second == data.wb->file_name()) {
        enqueue(ino, current->first);  // journaled as it is
        if (named && current->first == data.named_record) {
          *named = true;  // and named (a second close: release() after flush())
          return 0;
        }
      } else {
        JournalFile f;
        f.ino = ino;
        f.bytes = data.wb->footprint();
        f.data_name = data.wb->freeze_unsynced();
        f.segment_bytes = segment_bytes_;
        f.base_version = data.base_version.load();
        if (data.base) {
          f.base_size = data.base->size;
          f.base_segment_bytes = data.base->segment_bytes;
          f.base_segments = data.base->segments;
        }
        f.mode = mode;
        f.mtime_ns = mtime;
        f.state = data.wb->state();
        {
          std::lock_guard lock(pending_mutex_);
          f.sequence = ++journal_sequence_;
        }
        // The data file, its record and the tree naming it are synced together: at once for a
        // large file; for a small one by the syncer's next group commit (see mount.hpp).
        const bool lazy = data.wb->size() <= kGroupCommitMaxBytes;
        if (lazy)
          f.data_digest = digest_data_file(data.wb->descriptor(), data.wb->size());
        std::uint64_t replaced = 0;
        bool durable = true;
        {
          std::lock_guard jlock(tree_journal_mutex_);
          std::uint64_t generation = 0;
          std::uint64_t version = 0;
          bool tree_written = false;
          const std::optional<TreeName> name =
              lazy ? appendable_name_locked(ino, data) : std::nullopt;
          try {
            if (lazy) {
              replaced = journal_.put_file_lazy(f, data.wb->descriptor());
            } else {
              const Journal::SyncedPut put = journal_.put_file_synced(f, data.wb->descriptor());
              replaced = put.replaced_bytes;
              durable = put.durable;
            }
          } catch (...) {
            data.wb->unfreeze();
            throw;
          }
          // The record is the journal's now (its file frozen for good); the tree that names it
          // goes after it, and a failure from here on leaves the record there.
          if (name && journal_.append_tree_name(*name)) {
            tree_names_.fetch_add(1, std::memory_order_relaxed);
            data.named_record = f.sequence;
            if (named)
              *named = true;
          } else if (lazy) {
            // No tree record to add to, or it has names enough: a whole one.
            if (const std::optional<Bytes> tree = tree_record_bytes_locked(generation, version)) {
              journal_.put_tree_lazy(*tree);
              tree_written = true;
            }
          } else if (const std::optional<JournalTree> tree = tree_record_locked(generation)) {
            journal_.put_tree(*tree);
            tree_written = true;
            version = tree->base_version;
          }
          if (tree_written) {
            journaled_generation_ = generation;
            journaled_version_ = version;
            journaled_synced_ = !lazy;
          }
        }
        writeback_used_.fetch_add(f.bytes);
        writeback_used_.fetch_sub(replaced);
        account(data);
        enqueue(ino, f.sequence);
        if (lazy) {
          lazy_closes_.fetch_add(1, std::memory_order_relaxed);
          const std::size_t waiting = journal_.unsynced();
          if (waiting >= kSyncBacklog)
            journal_.sync_pending();  // the syncer fell behind: this close waits for the disk
          else if (waiting >= kSyncBatch)
            sync_cv_.notify_one();
        }
        // The record is in place and its upload queued, but its name may not be on disk: one
        // more try, then the caller hears of it.
        if (!durable && !journal_.sync_pending())
          throw LocalIoError("the journal's folder cannot be synced: a crash may lose the change");
      }
    } catch (const std::exception& e) {
      const std::string text = "cannot keep the changes of inode " + std::to_string(ino) +
                               " in the journal: " + e.what();
      log_.line(text);
      note_error(text);
      return errno_of(e);
    }
    if (named && *named)
      return 0;
    return write_tree_journal(data.wb->size() > kGroupCommitMaxBytes) ? 0 : EIO;
  }

  // Under tree_journal_mutex_ and data.mutex: the name to append to the journal's tree record for
  // a new file, instead of writing the whole tree again, when the record's tree has the file's
  // directory and nothing else about the file needs more (journal.hpp, "Tree record after the
  // close").
  std::optional<TreeName> appendable_name_locked(std::uint64_t ino, const FileData& data) {
    if (data.base_version.load() != 0 || data.created_name.empty())
      return std::nullopt;
    std::shared_lock tlock(tree_mutex_);
    const InodeRecord* rec = ns_->find(ino);
    const InodeRecord* dir = ns_->find(data.created_parent);
    if (tree_version_ != journaled_version_ || !rec || !dir || !S_ISREG(rec->mode) ||
        !rec->xattrs.empty() || ns_->nlink(ino) != 1 ||
        ns_->made_at(data.created_parent) > journaled_generation_) {
      return std::nullopt;
    }
    const auto entry = dir->entries.find(data.created_name);
    if (entry == dir->entries.end() || entry->second != ino)
      return std::nullopt;  // renamed since
    TreeName name{data.created_parent, data.created_name, ino, *rec};
    // As the whole tree would have it: the content committed so far.
    if (const auto d = dirty_content_.find(ino); d != dirty_content_.end())
      std::tie(name.record.size, name.record.content_version) = d->second;
    return name;
  }

  // Writes the journal's tree record: the tree as last committed and as this mount has it, unless
  // the record already says so. False when the local disk failed.
  // Under tree_journal_mutex_: the tree record to write, unless the journal's says so already.
  std::optional<JournalTree> tree_record_locked(std::uint64_t& generation) {
    JournalTree record;
    std::shared_lock tlock(tree_mutex_);
    generation = ns_->generation();
    if (journal_.has_tree() && generation == journaled_generation_ &&
        tree_version_ == journaled_version_) {
      return std::nullopt;
    }
    record.base = base_tree_;
    record.base_version = tree_version_;
    record.local = committed_snapshot();
    return record;
  }

  // tree_record_locked() as encoded bytes, built without copying the trees: the base's bytes
  // are kept while the base stays (it changes only with tree_version_).
  std::optional<Bytes> tree_record_bytes_locked(std::uint64_t& generation, std::uint64_t& version) {
    std::shared_lock tlock(tree_mutex_);
    generation = ns_->generation();
    version = tree_version_;
    if (journal_.has_tree() && generation == journaled_generation_ &&
        version == journaled_version_) {
      return std::nullopt;
    }
    if (!base_tree_bytes_ || base_tree_bytes_version_ != version) {
      base_tree_bytes_ = encode_tree(base_tree_);
      base_tree_bytes_version_ = version;
    }
    return encode_journal_tree(version, *base_tree_bytes_, ns_->encode_snapshot(dirty_content_));
  }

  // durable: synced when it returns (else written, and synced by the syncer's next group commit,
  // like a small file's close()).
  bool write_tree_journal(bool durable = true) {
    std::lock_guard lock(tree_journal_mutex_);
    std::uint64_t generation = 0;
    std::uint64_t version = 0;
    try {
      if (!durable) {
        const std::optional<Bytes> bytes = tree_record_bytes_locked(generation, version);
        if (!bytes)
          return true;
        journal_.put_tree_lazy(*bytes);
        journaled_synced_ = false;
      } else {
        const std::optional<JournalTree> pending = tree_record_locked(generation);
        if (!pending) {
          // Current, but maybe written lazily and not synced yet.
          if (!journaled_synced_ && !journal_.sync_pending())
            throw LocalIoError("cannot sync the journal in " + journal_.dir().string());
          journaled_synced_ = true;
          return true;
        }
        journal_.put_tree(*pending);
        version = pending->base_version;
        journaled_synced_ = true;
      }
    } catch (const std::exception& e) {
      const std::string text = std::string("cannot write the journal's tree record: ") + e.what();
      log_.line(text);
      note_error(text);
      return false;
    }
    journaled_generation_ = generation;
    journaled_version_ = version;
    return true;
  }

  // Drops the journal's tree record once nothing is pending and the tree is committed.
  void settle_journal() {
    std::lock_guard lock(tree_journal_mutex_);
    if (!journal_.has_tree() || pending_count() > 0)
      return;
    std::uint64_t generation = 0;
    {
      std::shared_lock tlock(tree_mutex_);
      generation = ns_->generation();
    }
    {
      std::lock_guard clock(commit_mutex_);
      if (committed_generation_ < generation)
        return;
    }
    journal_.drop_tree();
  }

  // Whether ino's WriteBack holds no journaled file any more, so that the journal may reuse the
  // data file of its dropped record. A file unlinked while open, say, still reads its frozen one.
  bool data_released(std::uint64_t ino) {
    std::shared_ptr<FileData> data;
    {
      std::shared_lock lock(tree_mutex_);
      const auto it = files_.find(ino);
      if (it == files_.end())
        return false;  // a handle may still hold its FileData
      data = it->second;
    }
    std::lock_guard lock(data->mutex);
    return !data->wb || !data->wb->frozen();
  }

  void drop_gone_records() {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> gone;
    {
      std::lock_guard lock(pending_mutex_);
      gone.swap(gone_records_);
      releasing_ += gone.size();
    }
    for (const auto& [ino, sequence] : gone)
      writeback_used_.fetch_sub(journal_.drop_file(ino, sequence));
    std::lock_guard lock(pending_mutex_);
    releasing_ -= gone.size();
  }

  // True when both servers answer (and says so once when they are back).
  bool probe_servers() {
    try {
      if (!prober_)
        prober_ = std::make_unique<ServerProber>(options_.home, kProbeTimeout);
      for (const auto& result : prober_->probe()) {
        if (!result.reachable)
          return false;
      }
    } catch (const std::exception& e) {
      note_error(e.what());
      return false;
    }
    if (servers_down_.exchange(false)) {
      log_.line("both servers answer again; " + std::to_string(pending_count()) +
                " file(s) to upload");
      upload_cv_.notify_all();
    }
    return true;
  }

  // The uploader: while a server is away, probes it; once both answer, uploads the queue.
  void upload_loop() {
    auto pause = kProbeFirst;
    for (;;) {
      {
        std::unique_lock lock(pending_mutex_);
        const bool was_down = servers_down_.load();
        const auto timeout = was_down ? pause : std::chrono::milliseconds(1000);
        // A server found away starts the probing at once.
        upload_cv_.wait_for(lock, timeout, [&] {
          return upload_stop_ || !gone_records_.empty() || servers_down_.load() != was_down ||
                 (!servers_down_.load() && has_due_locked());
        });
        if (upload_stop_)
          return;
      }
      drop_gone_records();
      if (servers_down_.load()) {
        if (!probe_servers()) {
          pause = std::min<std::chrono::milliseconds>(pause * 2, kProbeMax);
          continue;
        }
        pause = kProbeFirst;
      }
      bool due = false;
      {
        std::lock_guard lock(pending_mutex_);
        due = has_due_locked();
      }
      if (due)
        drain(false);
      else
        journal_.sweep();  // idle: the dropped files' data goes now
    }
  }

  // Uploads the due files of the queue in order, commits the tree, then drops their records.
  // Stops at the first sign of an absent server. Returns how many files were stored. While more
  // files keep arriving, the files committed are carried to the next round (their records stay)
  // and named by one tree commit for several rounds (kTreeBatchFiles, kTreeBatchDelay).
  std::size_t drain(bool stopping) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> batch;
    {
      std::unique_lock lock(pending_mutex_);
      // A round carried over: the next one gathers a few files first, so that its prestage and
      // commits are shared by several (bounded by kRoundWait; the tree waits kTreeBatchDelay).
      if (!stopping && !unnamed_.empty()) {
        gathering_ = true;
        gathered_ = 0;
        upload_cv_.wait_for(lock, kRoundWait, [&] {
          return upload_stop_ || due_count_locked() >= kRoundFiles || servers_down_.load();
        });
        gathering_ = false;
      }
      const auto now = Clock::now();
      for (const auto ino : pending_order_) {
        const Pending& p = pending_.at(ino);
        if (p.not_before <= now && !unnamed_.contains({ino, p.sequence}))
          batch.emplace_back(ino, p.sequence);
      }
    }
    // Group commit: the segments of the batch's small files go up in a few requests, then the
    // files commit in one request per server (the rest each on a pooled client), then one commit
    // of the tree names them all.
    prestage(batch);
    std::vector<int> results(batch.size(), kUnsettled);
    commit_small_files(batch, results);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> absent{false};
    const auto work = [&] {
      for (;;) {
        const std::size_t i = next.fetch_add(1);
        if (i >= batch.size() || absent.load())
          return;
        if (results[i] != kUnsettled)
          continue;
        if (!stopping) {
          std::lock_guard lock(pending_mutex_);
          if (upload_stop_)
            return;
        }
        results[i] = commit_file(batch[i].first);
        if (results[i] == kPending)
          absent = true;  // a server went away again
      }
    };
    {
      std::vector<Joined<void>> workers;
      const std::size_t n = std::min<std::size_t>(
          kDrainWorkers,
          static_cast<std::size_t>(std::count(results.begin(), results.end(), kUnsettled)));
      for (std::size_t w = 1; w < n; ++w)
        workers.push_back(drain_threads_.run(work));
      work();
    }
    std::replace(results.begin(), results.end(), kUnsettled, kPending);  // not reached
    std::size_t committed = 0;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (results[i] == 0) {
        ++committed;
        if (unnamed_.empty())
          unnamed_since_ = Clock::now();
        unnamed_.insert(batch[i]);
      } else if (results[i] != kPending) {
        mark_failing(batch[i].first);
      }
    }
    if (unnamed_.empty())
      return 0;
    // Carried records hold the journal's space a little longer: not while it fills up.
    if (!stopping && !absent.load() && unnamed_.size() < kTreeBatchFiles &&
        Clock::now() - unnamed_since_ < kTreeBatchDelay &&
        writeback_used_.load() < options_.writeback_bytes / 2 && more_due())
      return committed;
    // The new versions must be named by a durable tree before the records can go.
    if (sync_tree() != 0 && !write_tree_journal())
      return 0;
    std::set<std::pair<std::uint64_t, std::uint64_t>> done;
    done.swap(unnamed_);
    std::vector<Journal::Drop> current;
    {
      std::lock_guard lock(pending_mutex_);
      std::set<std::uint64_t> gone;
      for (const auto& [ino, sequence] : done) {
        const auto it = pending_.find(ino);
        if (it != pending_.end() && it->second.sequence == sequence) {
          pending_.erase(it);
          gone.insert(ino);
          current.push_back({ino, sequence, false});
        }
      }
      std::erase_if(pending_order_, [&](std::uint64_t ino) { return gone.contains(ino); });
      releasing_ += current.size();
    }
    for (auto& drop : current)
      drop.data_released = data_released(drop.ino);
    writeback_used_.fetch_sub(journal_.drop_files(current));
    {
      std::lock_guard lock(pending_mutex_);
      releasing_ -= current.size();
    }
    uploads_done_.fetch_add(current.size(), std::memory_order_relaxed);
    settle_journal();
    return done.size();
  }

  // Whether the queue holds due files that are not committed and waiting for the tree already.
  bool more_due() {
    std::lock_guard lock(pending_mutex_);
    return due_count_locked() > 0;
  }

  // Under pending_mutex_: how many such files.
  std::size_t due_count_locked() const {
    const auto now = Clock::now();
    return static_cast<std::size_t>(
        std::count_if(pending_.begin(), pending_.end(), [&](const auto& p) {
          return p.second.not_before <= now && !unnamed_.contains({p.first, p.second.sequence});
        }));
  }

  // Uploads the segments of the batch's small files (local, not staged yet) in requests of up to
  // kPrestageBytes for several files, and marks them staged, so that each file's commit needs one
  // round trip instead of two. A segment changed meanwhile is not marked (its commit uploads it
  // again); a failure leaves everything to the commits, which handle it.
  void prestage(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& batch) {
    struct Piece {
      std::shared_ptr<FileData> data;
      std::uint64_t segment = 0;
      std::uint64_t version = 0;
    };
    std::vector<Piece> pieces;
    std::vector<Bytes> bytes;
    std::uint64_t total = 0;
    const auto flush = [&] {
      if (pieces.empty())
        return;
      std::vector<SegmentRef> refs;
      try {
        refs = upload_segments(bytes);
      } catch (const std::exception&) {
        pieces.clear();
        bytes.clear();
        total = 0;
        return;
      }
      std::size_t staged = 0;
      for (std::size_t k = 0; k < pieces.size(); ++k) {
        std::lock_guard lock(pieces[k].data->mutex);
        WriteBack* wb = pieces[k].data->wb.get();
        if (wb && wb->stage(pieces[k].segment, pieces[k].version, refs[k])) {
          cache_.insert(cache_key(refs[k]), std::move(bytes[k]));
          ++staged;
        }
      }
      segments_staged_.fetch_add(staged, std::memory_order_relaxed);
      pieces.clear();
      bytes.clear();
      total = 0;
    };
    for (const auto& [ino, sequence] : batch) {
      std::shared_ptr<FileData> data;
      {
        std::shared_lock lock(tree_mutex_);
        const auto it = files_.find(ino);
        if (it == files_.end())
          continue;
        data = it->second;
      }
      {
        std::lock_guard lock(data->mutex);
        const WriteBack* wb = data->wb.get();
        if (!wb || !wb->dirty() || data->staging || wb->size() > kGroupCommitMaxBytes)
          continue;
        for (std::uint64_t s = 0; s < wb->segment_count(); ++s) {
          if (!wb->is_local(s) || wb->staged(s))
            continue;
          Bytes segment;
          wb->build(s, {}, segment);
          total += segment.size();
          bytes.push_back(std::move(segment));
          pieces.push_back({data, s, wb->version(s)});
        }
      }
      if (total >= kPrestageBytes)
        flush();
    }
    flush();
  }

  // A pending file that failed for another reason than an absent server: tried again later, and
  // it does not hold back the closes after it.
  void mark_failing(std::uint64_t ino) {
    std::lock_guard lock(pending_mutex_);
    if (const auto it = pending_.find(ino); it != pending_.end()) {
      it->second.failing = true;
      it->second.not_before = Clock::now() + kRetryFailing;
    }
  }

  // Before serving: claims the journals of mounts that ended with changes pending, merges their
  // tree changes and takes their files into this mount's journal and queue. Returns the orphans
  // whose folders can go once the merged tree is committed (one with a file that could not be
  // taken over stays, for the next mount to try again).
  std::vector<Journal::Orphan> replay_journals() {
    auto orphans = journal_.claim_orphans();
    std::vector<Journal::Orphan> done;
    if (orphans.empty())
      return done;
    std::size_t files = 0;
    std::unique_lock lock(tree_mutex_);
    for (auto& orphan : orphans) {
      for (const auto& problem : orphan.problems)
        log_.line("journal: " + problem + " (left out)");
      if (orphan.tree) {
        MergeResult merged = merge_trees(orphan.tree->base, orphan.tree->local, ns_->snapshot());
        ns_->adopt(std::move(merged.tree));
        collect_gone();
      }
    }
    for (auto& orphan : orphans) {
      bool whole = true;
      for (const auto& file : orphan.files) {
        const int restored = restore_file(orphan, file);
        files += restored > 0 ? 1 : 0;
        whole = whole && restored >= 0;
      }
      if (whole)
        done.push_back(std::move(orphan));
    }
    lock.unlock();
    if (!write_tree_journal())
      throw LocalIoError("cannot write the journal in " + journal_.dir().string());
    log_.line("replayed " + std::to_string(orphans.size()) +
              " journal(s) of earlier mounts: " + std::to_string(files) + " file(s) to upload");
    return done;
  }

  // Under tree_mutex_ (exclusive), before serving: one journaled file into this mount. 1 when it
  // is pending here now, 0 when it has no name any more (nothing to keep), -1 on failure.
  int restore_file(const Journal::Orphan& orphan, const JournalFile& f) {
    const std::string what =
        "the pending content of inode " + std::to_string(f.ino) + " in " + orphan.dir.string();
    InodeRecord* rec = ns_->find_mut(f.ino);
    if (!rec || !S_ISREG(rec->mode) || ns_->nlink(f.ino) == 0) {
      log_.line(what + " belongs to a file that was removed since: dropped");
      return 0;
    }
    if (f.segment_bytes != segment_bytes_) {
      log_.line(what + " was written with another segment size than configured now: left there");
      return -1;
    }
    try {
      const std::string name = journal_.adopt_data(orphan, f.data_name);
      auto wb =
          std::make_unique<WriteBack>(journal_.dir(), segment_bytes_, f.state, name, data_files());
      if (f.data_digest && digest_data_file(wb->descriptor(), f.state.size) != *f.data_digest) {
        // Put without a sync and cut by a crash of the machine before the group commit.
        ::unlinkat(AT_FDCWD, (journal_.dir() / name).c_str(), 0);
        log_.line(what +
                  " did not reach the disk before the machine stopped (closed within "
                  "the journal's last sync interval, never fsync'd): lost");
        return 0;
      }
      auto data = file_data_locked(f.ino);
      if (f.base_version > 0) {
        data->base = StoredObject{content_key(f.ino),   f.base_version, f.base_size,
                                  f.base_segment_bytes, f.mode,         f.mtime_ns,
                                  f.base_segments};
      } else {
        data->base.reset();
      }
      data->base_version = f.base_version;
      data->loaded = true;
      data->wb = std::move(wb);
      drop_scan_ahead(*data);
      // What the servers' tree says is committed; the upload commits on top of f's base.
      dirty_content_.try_emplace(f.ino, rec->size, rec->content_version);
      rec->size = data->wb->size();
      JournalFile mine = f;
      mine.data_name = name;
      mine.sequence = ++journal_sequence_;
      writeback_used_.fetch_add(mine.bytes);
      writeback_used_.fetch_sub(journal_.put_file(mine));
      enqueue(f.ino, mine.sequence);
      return 1;
    } catch (const std::exception& e) {
      log_.line(what + " cannot be taken over (left there): " + e.what());
      return -1;
    }
  }

  // ---- segment lists of files the kernel forgot ----

  std::shared_ptr<const StoredObject> known_manifest(std::uint64_t ino) {
    std::lock_guard lock(manifests_mutex_);
    const auto it = manifests_.find(ino);
    return it == manifests_.end() ? nullptr : it->second.object;
  }

  void remember_manifest(std::uint64_t ino, const StoredObject& object) {
    auto copy = std::make_shared<const StoredObject>(object);
    std::lock_guard lock(manifests_mutex_);
    KnownManifest& slot = manifests_[ino];
    if (slot.object)
      manifest_segments_ -= slot.object->segments.size();
    slot.object = std::move(copy);
    slot.stamp = ++manifest_stamp_;
    manifest_segments_ += slot.object->segments.size();
    manifest_order_.emplace_back(ino, slot.stamp);
    // Oldest first, within the budget; entries a newer one replaced are skipped.
    while (manifest_segments_ > kManifestCacheSegments && !manifest_order_.empty()) {
      const auto [old, stamp] = manifest_order_.front();
      manifest_order_.pop_front();
      const auto it = manifests_.find(old);
      if (it != manifests_.end() && it->second.stamp == stamp) {
        manifest_segments_ -= it->second.object->segments.size();
        manifests_.erase(it);
      }
    }
    if (manifest_order_.size() > 2 * manifests_.size() + 1024) {
      manifest_order_.clear();
      for (const auto& [n, known] : manifests_)
        manifest_order_.emplace_back(n, known.stamp);
      std::sort(manifest_order_.begin(), manifest_order_.end(),
                [](const auto& a, const auto& b) { return a.second < b.second; });
    }
    manifests_room_.resize(manifest_segments_ * sizeof(SegmentRef));
  }

  // ---- memory ----

  // After a transfer: gives the allocator's free pages back to the system, at most every
  // kTrimInterval unless `now`. Segments evicted and transfer buffers freed leave holes between
  // live cache entries that malloc keeps resident (about 10% of the budget while reading at full
  // speed); the peak resident set is what the budget promises. Costs ~50,000 page faults per GiB
  // read cold (~3% of the mount's CPU), for ~25 MB less peak.
  void trim_memory(bool now = false) {
    const std::int64_t at = Clock::now().time_since_epoch().count();
    std::int64_t last = last_trim_.load(std::memory_order_relaxed);
    if (!now && (at - last < std::chrono::nanoseconds(kTrimInterval).count() ||
                 !last_trim_.compare_exchange_strong(last, at, std::memory_order_relaxed))) {
      return;
    }
    if (now)
      last_trim_.store(at, std::memory_order_relaxed);
    malloc_trim(0);
  }

  // ---- read-ahead ----

  void queue_readahead(std::vector<SegmentRef> refs) {
    {
      std::lock_guard lock(readahead_mutex_);
      if (readahead_queue_.size() >= kReadaheadQueue)
        return;  // the workers are behind: reading ahead further would only evict
      readahead_queue_.push_back(std::move(refs));
    }
    readahead_cv_.notify_one();
  }

  void readahead_loop() {
    for (;;) {
      std::vector<SegmentRef> refs;
      {
        std::unique_lock lock(readahead_mutex_);
        readahead_cv_.wait(lock, [this] { return readahead_stop_ || !readahead_queue_.empty(); });
        if (readahead_stop_)
          return;
        refs = std::move(readahead_queue_.front());
        readahead_queue_.pop_front();
      }
      std::vector<SegmentRef> missing;
      for (const auto& ref : refs) {
        if (!cache_.contains(cache_key(ref)))
          missing.push_back(ref);
      }
      if (missing.empty())
        continue;
      try {
        for (std::size_t first = 0; first < missing.size(); first += kSegmentsPerBatch / 4) {
          const std::size_t n = std::min(kSegmentsPerBatch / 4, missing.size() - first);
          get_segments(
              std::vector<SegmentRef>(missing.begin() + static_cast<std::ptrdiff_t>(first),
                                      missing.begin() + static_cast<std::ptrdiff_t>(first + n)));
          readahead_segments_.fetch_add(n, std::memory_order_relaxed);
          trim_memory();
        }
      } catch (const std::exception& e) {
        log_.line(std::string("read-ahead failed: ") + e.what());
      }
    }
  }

  // ---- the tree: committing, merging, refreshing ----

  // Under tree_mutex_: inodes gone for good; their content is removed after the next commit.
  void collect_gone() {
    for (const std::uint64_t ino : ns_->take_gone()) {
      const auto it = files_.find(ino);
      const bool had_content =
          (it != files_.end() && it->second->base_version.load() > 0) ||
          (base_tree_.inodes.contains(ino) && base_tree_.inodes.at(ino).content_version > 0);
      if (it != files_.end())
        files_.erase(it);
      dirty_content_.erase(ino);
      if (had_content)
        pending_removal_.insert(ino);
      // Its pending upload goes with it (the uploader drops the record).
      std::lock_guard lock(pending_mutex_);
      if (const auto p = pending_.find(ino); p != pending_.end()) {
        gone_records_.emplace_back(ino, p->second.sequence);
        pending_.erase(p);
        std::erase(pending_order_, ino);
      }
    }
  }

  // Under tree_mutex_: the tree as committed content goes (files being written show their last
  // committed size and version).
  Tree committed_snapshot() const {
    Tree t = ns_->snapshot();
    for (const auto& [ino, committed] : dirty_content_) {
      const auto it = t.inodes.find(ino);
      if (it != t.inodes.end()) {
        it->second.size = committed.first;
        it->second.content_version = committed.second;
      }
    }
    return t;
  }

  void reserve_inodes_now(Client& client) {
    ns_->reserve_block(kInodeBlock);
    for (int attempt = 0; attempt < 5; ++attempt) {
      const Tree snapshot = committed_snapshot();
      try {
        const StoredObject done = save_tree(client, snapshot, tree_version_);
        tree_version_ = done.version;
        base_tree_ = snapshot;
        committed_generation_ = ns_->generation();
        return;
      } catch (const ConflictError&) {
        auto remote = load_tree(client, tree_version_);
        if (!remote)
          throw;
        rebase(*remote, nullptr);
      }
    }
    throw ConflictError("the tree keeps changing under this mount; try again");
  }

  // Reserves inode numbers through the committer (a commit must carry them before use).
  int reserve_inodes() {
    {
      std::unique_lock lock(tree_mutex_);
      if (ns_->inodes_left() > 0)
        return 0;
      ns_->reserve_block(kInodeBlock);
    }
    return sync_tree();
  }

  // Waits until every change made before the call is committed. 0 or EIO.
  int sync_tree() {
    const auto start = Clock::now();
    const int result = sync_tree_untimed();
    sync_wait_us_.fetch_add(elapsed_us(start), std::memory_order_relaxed);
    return result;
  }

  int sync_tree_untimed() {
    std::uint64_t target = 0;
    {
      std::shared_lock lock(tree_mutex_);
      target = ns_->generation();
    }
    {
      std::lock_guard lock(commit_mutex_);
      if (committed_generation_ >= target)
        return 0;
    }
    // Nobody committing: commit here, sparing a hand-over to the committer thread.
    if (std::unique_lock run(commit_run_mutex_, std::try_to_lock); run.owns_lock()) {
      {
        std::lock_guard lock(commit_mutex_);
        if (committed_generation_ >= target)
          return 0;
      }
      commit_tree();
      std::lock_guard lock(commit_mutex_);
      return committed_generation_ >= target ? 0 : EIO;
    }
    std::unique_lock lock(commit_mutex_);
    if (committed_generation_ >= target)
      return 0;
    const std::uint64_t failures = commit_failures_;
    ++sync_waiters_;
    commit_cv_.notify_all();
    commit_cv_.wait(lock, [&] {
      return committed_generation_ >= target || commit_failures_ != failures || stopped_;
    });
    --sync_waiters_;
    return committed_generation_ >= target ? 0 : EIO;
  }

  void commit_loop() {
    auto next_refresh = Clock::now() + options_.refresh;
    bool dirty = false;
    Clock::time_point dirty_since{};
    Clock::time_point retry_at{};  // after a failure, no new attempt before this
    auto backoff = std::chrono::milliseconds(0);
    for (;;) {
      bool sync = false;
      {
        std::unique_lock lock(commit_mutex_);
        commit_cv_.wait_for(lock, std::chrono::milliseconds(50),
                            [this] { return stopping_ || sync_waiters_ > 0; });
        if (stopping_)
          break;
        sync = sync_waiters_ > 0;
      }
      const auto now = Clock::now();
      std::uint64_t generation = 0;
      {
        std::shared_lock lock(tree_mutex_);
        generation = ns_->generation();
      }
      std::uint64_t committed = 0;
      {
        std::lock_guard lock(commit_mutex_);
        committed = committed_generation_;
      }
      if (generation > committed) {
        if (!dirty) {
          dirty = true;
          dirty_since = now;
        }
        const bool due = sync || now - dirty_since >= options_.commit_delay;
        if (due && (sync || now >= retry_at)) {
          bool committed_now = false;
          {
            std::lock_guard run(commit_run_mutex_);
            committed_now = commit_tree();
          }
          if (committed_now) {
            dirty = false;
            backoff = std::chrono::milliseconds(0);
            retry_at = now;
          } else {
            // Short: a server's return must not wait long for the next attempt.
            backoff = std::min<std::chrono::milliseconds>(
                std::chrono::milliseconds(2000),
                backoff.count() ? backoff * 2 : std::chrono::milliseconds(250));
            retry_at = now + backoff;
            write_tree_journal();  // the change survives a crash while the servers are away
          }
        }
      } else {
        dirty = false;
      }
      if (now >= next_refresh && !servers_down_.load()) {
        std::lock_guard run(commit_run_mutex_);
        refresh();
        next_refresh = Clock::now() + options_.refresh;
      }
      settle_journal();
      if (!sync && !servers_down_.load())
        remove_contents(16);
    }
    std::lock_guard lock(commit_mutex_);
    stopped_ = true;
    commit_cv_.notify_all();
  }

  // One commit of the tree (merging first when another mount committed). True on success.
  bool commit_tree() {
    const auto start = Clock::now();
    const bool ok = commit_tree_timed();
    tree_commit_us_.fetch_add(elapsed_us(start), std::memory_order_relaxed);
    return ok;
  }

  bool commit_tree_timed() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      Tree snapshot;
      std::uint64_t generation = 0;
      std::set<std::uint64_t> removals;
      {
        std::shared_lock lock(tree_mutex_);
        snapshot = committed_snapshot();
        generation = ns_->generation();
        removals = pending_removal_;
      }
      try {
        auto client = pool_.acquire();
        const StoredObject done = save_tree(*client, snapshot, tree_version_);
        tree_commits_.fetch_add(1, std::memory_order_relaxed);
        {
          std::unique_lock lock(tree_mutex_);
          tree_version_ = done.version;
          base_tree_ = snapshot;
          for (const auto ino : removals)
            pending_removal_.erase(ino);
        }
        {
          std::lock_guard lock(commit_mutex_);
          committed_generation_ = std::max(committed_generation_, generation);
        }
        commit_cv_.notify_all();
        {
          // Content of inodes the committed tree no longer has (a merge may have brought some
          // back): removed in the background, a few at a time.
          std::lock_guard lock(removal_mutex_);
          for (const auto ino : removals) {
            if (!snapshot.inodes.contains(ino))
              removal_queue_.push_back(ino);
          }
        }
        return true;
      } catch (const ConflictError&) {
        try {
          auto client = pool_.acquire();
          auto remote = load_tree(*client, tree_version_);
          if (!remote)
            throw IntegrityError("the tree vanished from the servers");
          rebase(*remote, se_);
        } catch (const std::exception& e) {
          return commit_failed(e);
        }
      } catch (const std::exception& e) {
        return commit_failed(e);
      }
    }
    return commit_failed(ConflictError("the tree keeps changing; will retry"));
  }

  bool commit_failed(const std::exception& e) {
    log_.line(std::string("committing the tree failed (will retry): ") + e.what());
    errors_.fetch_add(1, std::memory_order_relaxed);
    network_failed(e);
    {
      std::lock_guard lock(commit_mutex_);
      ++commit_failures_;
    }
    commit_cv_.notify_all();
    return false;
  }

  // Removes up to max queued contents; returns how many are still queued.
  std::size_t remove_contents(std::size_t max) {
    std::vector<std::uint64_t> batch;
    {
      std::lock_guard lock(removal_mutex_);
      while (!removal_queue_.empty() && batch.size() < max) {
        batch.push_back(removal_queue_.front());
        removal_queue_.pop_front();
      }
    }
    if (!batch.empty()) {
      auto client = pool_.acquire();
      for (const auto ino : batch) {
        try {
          client->remove_object(content_key(ino));
        } catch (const NotFound&) {
        } catch (const std::exception& e) {
          log_.line("removing the content of inode " + std::to_string(ino) +
                    " failed (it stays on the servers, unreferenced): " + e.what());
        }
      }
    }
    std::lock_guard lock(removal_mutex_);
    return removal_queue_.size();
  }

  // Polls the tree's version; merges in what another mount committed.
  void refresh() {
    try {
      auto client = pool_.acquire();
      const std::uint64_t version = client->object_version(kTreeKey);
      if (version <= tree_version_)
        return;
      auto remote = load_tree(*client, tree_version_);
      if (remote && remote->version > tree_version_)
        rebase(*remote, se_);
    } catch (const std::exception& e) {
      log_.line(std::string("checking for changes from other mounts failed: ") + e.what());
    }
  }

  // Merges a newer remote tree into this mount's state and tells the kernel what changed.
  void rebase(const RemoteTree& remote, fuse_session* se) {
    std::vector<std::pair<fuse_ino_t, std::string>> stale_entries;
    std::vector<fuse_ino_t> stale_inodes;
    {
      std::unique_lock lock(tree_mutex_);
      const Tree before = ns_->snapshot();
      const Tree local = committed_snapshot();
      std::map<std::uint64_t, std::uint64_t> live_sizes;
      for (const auto& [ino, committed] : dirty_content_) {
        if (const InodeRecord* rec = ns_->find(ino))
          live_sizes[ino] = rec->size;
      }
      MergeResult merged = merge_trees(base_tree_, local, remote.tree);
      const bool nothing_local = merged.tree == remote.tree;
      ns_->adopt(std::move(merged.tree));
      for (const auto& [ino, size] : live_sizes) {
        if (InodeRecord* rec = ns_->find_mut(ino))
          rec->size = size;
      }
      collect_gone();
      base_tree_ = remote.tree;
      tree_version_ = remote.version;
      if (nothing_local) {
        std::lock_guard clock(commit_mutex_);
        committed_generation_ = ns_->generation();
      }
      const Tree after = ns_->snapshot();
      for (const auto& [ino, rec] : before.inodes) {
        const auto it = after.inodes.find(ino);
        if (it == after.inodes.end() || !(it->second == rec))
          stale_inodes.push_back(ino);
        for (const auto& [name, child] : rec.entries) {
          if (it == after.inodes.end() || !it->second.entries.contains(name) ||
              it->second.entries.at(name) != child) {
            stale_entries.emplace_back(ino, name);
          }
        }
        // New names too: the kernel may hold them as names that are not there (lookup()).
        if (it != after.inodes.end()) {
          for (const auto& [name, child] : it->second.entries) {
            if (!rec.entries.contains(name))
              stale_entries.emplace_back(ino, name);
          }
        }
      }
    }
    remote_merges_.fetch_add(1, std::memory_order_relaxed);
    if (se)
      queue_invalidations(std::move(stale_entries), stale_inodes);
  }

  // Hands invalidations of kernel entries and inodes to the notifier thread: telling the kernel
  // can wait for its inode locks, which a handler waiting for the caller may hold.
  void queue_invalidations(std::vector<std::pair<fuse_ino_t, std::string>> entries,
                           const std::vector<fuse_ino_t>& inodes) {
    {
      std::lock_guard lock(notify_mutex_);
      std::move(entries.begin(), entries.end(), std::back_inserter(notify_entries_));
      notify_inodes_.insert(notify_inodes_.end(), inodes.begin(), inodes.end());
    }
    notify_cv_.notify_one();
  }

  void notify_loop() {
    for (;;) {
      std::vector<std::pair<fuse_ino_t, std::string>> entries;
      std::vector<fuse_ino_t> inodes;
      {
        std::unique_lock lock(notify_mutex_);
        notify_cv_.wait(lock, [this] {
          return notify_stop_ || !notify_entries_.empty() || !notify_inodes_.empty();
        });
        if (notify_stop_)
          return;
        entries.swap(notify_entries_);
        inodes.swap(notify_inodes_);
      }
      for (const auto& [parent, name] : entries)
        fuse_lowlevel_notify_inval_entry(se_, parent, name.c_str(), name.size());
      for (const auto ino : inodes)
        fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
    }
  }

  // ---- stats ----

  std::string stats_text() {
    const auto c = cache_.stats();
    const auto d = disk_ ? disk_->stats() : cache::DiskTierStats{};
    const auto t = pool_.counters();
    std::uint64_t pending = 0;
    std::uint64_t inodes = 0;
    std::uint64_t generation = 0;
    {
      std::shared_lock lock(tree_mutex_);
      pending = dirty_content_.size();
      inodes = ns_->named_count();
      generation = ns_->generation();
    }
    const std::size_t uploads = pending_count();
    std::string last_error;
    {
      std::lock_guard lock(error_mutex_);
      last_error = last_error_;
    }
    std::uint64_t committed = 0;
    {
      std::lock_guard lock(commit_mutex_);
      committed = committed_generation_;
    }
    std::uint64_t removals = 0;
    {
      std::lock_guard lock(removal_mutex_);
      removals = removal_queue_.size();
    }
    std::ostringstream out;
    out << "pid: " << ::getpid() << "\n"
        << "mountpoint: " << options_.mountpoint.string() << "\n"
        << "tree_version: " << tree_version_ << "\n"
        << "inodes: " << inodes << "\n"
        << "cache_hits: " << c.hits << "\n"
        << "cache_misses: " << c.misses << "\n"
        << "cache_bytes: " << c.usage << "\n"
        << "cache_capacity: " << c.capacity << "\n"
        << "cache_entries: " << c.entries << "\n"
        << "cache_evictions: " << c.evictions << "\n"
        << "cache_pinned_bytes: " << c.pinned_bytes << "\n"
        << "cache_reserved_bytes: " << c.reserved << "\n"
        << "disk_cache_hits: " << d.hits << "\n"
        << "disk_cache_misses: " << d.misses << "\n"
        << "disk_cache_bytes: " << d.usage << "\n"
        << "disk_cache_capacity: " << d.capacity << "\n"
        << "readahead_segments: " << readahead_segments_.load() << "\n"
        << "segments_uploaded_ahead: " << segments_staged_.load() << "\n"
        << "bytes_checked_ahead: " << scanned_ahead_bytes_.load() << "\n"
        << "reads: " << reads_.load() << "\n"
        << "bytes_read: " << bytes_read_.load() << "\n"
        << "writes: " << writes_.load() << "\n"
        << "bytes_written: " << bytes_written_.load() << "\n"
        << "bytes_sent: " << t.bytes_sent << "\n"
        << "bytes_received: " << t.bytes_received << "\n"
        << "shares_sent: " << t.shares_sent << "\n"
        << "shares_skipped: " << t.shares_skipped << "\n"
        << "object_commits: " << t.commits << "\n"
        << "files_committed: " << files_committed_.load() << "\n"
        << "files_committed_together: " << files_committed_together_.load() << "\n"
        << "tree_commits: " << tree_commits_.load() << "\n"
        << "journal_syncs: " << journal_syncs_.load() << "\n"
        << "journal_lazy_closes: " << lazy_closes_.load() << "\n"
        << "journal_tree_names: " << tree_names_.load() << "\n"
        << "file_commit_us: " << file_commit_us_.load() << "\n"
        << "tree_commit_us: " << tree_commit_us_.load() << "\n"
        << "sync_wait_us: " << sync_wait_us_.load() << "\n"
        << "remote_merges: " << remote_merges_.load() << "\n"
        << "conflicts: " << conflicts_.load() << "\n"
        << "errors: " << errors_.load() << "\n"
        << "files_pending: " << pending << "\n"
        << "uploads_pending: " << uploads << "\n"
        << "bytes_pending: " << journal_.bytes() << "\n"
        << "writeback_bytes: " << writeback_used_.load() << "\n"
        << "writeback_limit: " << options_.writeback_bytes << "\n"
        << "servers_reachable: " << (servers_down_.load() ? 0 : 1) << "\n"
        << "syslog_dropped: " << log_.dropped() << "\n"
        << "uploads_done: " << uploads_done_.load() << "\n"
        << "removals_pending: " << removals << "\n"
        << "tree_pending: " << (generation > committed ? 1 : 0)
        << "\n"
        // Text values last: a reader splitting on blanks still gets every number above.
        << "journal: " << journal_.dir().string() << "\n"
        << "last_error: " << last_error << "\n";
    return out.str();
  }

  MountOptions options_;
  Log log_;
  ClientPool pool_;
  cache::SegmentCache cache_;
  std::unique_ptr<cache::DiskTier> disk_;  // -o cache_dir: the second tier, or null
  Journal journal_;  // outlives files_ (their write-back files live in its folder)
  fsys::path writeback_dir_;
  std::uint32_t segment_bytes_ = 0;
  fuse_session* se_ = nullptr;

  std::shared_mutex tree_mutex_;
  std::optional<Namespace> ns_;
  std::unordered_map<std::uint64_t, std::shared_ptr<FileData>> files_;
  // Files with uncommitted changes: their committed (size, content version).
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> dirty_content_;
  std::set<std::uint64_t> pending_removal_;
  std::mutex removal_mutex_;
  std::deque<std::uint64_t> removal_queue_;  // contents to remove from the servers
  Tree base_tree_;  // the tree as last committed or merged (the merge base)

  // Held by whichever thread commits or refreshes the tree (the committer, or a thread in
  // sync_tree() when the committer is idle): tree_version_ changes only under it. Taken before
  // tree_mutex_ and commit_mutex_.
  std::mutex commit_run_mutex_;
  std::atomic<std::uint64_t> tree_version_{0};
  std::thread committer_;

  std::mutex commit_mutex_;
  std::condition_variable commit_cv_;
  std::uint64_t committed_generation_ = 0;
  std::uint64_t commit_failures_ = 0;
  int sync_waiters_ = 0;
  bool stopping_ = false;
  bool stopped_ = false;

  std::mutex handles_mutex_;
  std::uint64_t next_handle_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<OpenFile>> files_open_;
  std::unordered_map<std::uint64_t, std::shared_ptr<DirHandle>> dirs_;

  std::mutex inflight_mutex_;
  std::unordered_map<std::string, std::shared_future<void>> inflight_;

  std::mutex readahead_mutex_;
  std::condition_variable readahead_cv_;
  std::deque<std::vector<SegmentRef>> readahead_queue_;
  bool readahead_stop_ = false;
  std::vector<std::thread> readahead_workers_;

  std::mutex notify_mutex_;
  std::condition_variable notify_cv_;
  std::vector<std::pair<fuse_ino_t, std::string>> notify_entries_;
  std::vector<fuse_ino_t> notify_inodes_;
  bool notify_stop_ = false;
  std::thread notifier_;

  std::mutex sync_mutex_;
  std::condition_variable sync_cv_;
  bool sync_stop_ = false;
  std::thread syncer_;
  std::atomic<std::uint64_t> journal_syncs_{0}, lazy_closes_{0}, tree_names_{0};

  InoQueue stage_queue_;
  std::thread stager_;

  InoQueue scan_ahead_queue_;
  std::thread scan_aheader_;
  std::atomic<std::uint64_t> scanned_ahead_bytes_{0};

  std::atomic<std::uint64_t> reads_{0}, bytes_read_{0}, writes_{0}, bytes_written_{0};
  std::atomic<std::uint64_t> readahead_segments_{0}, files_committed_{0}, tree_commits_{0};
  std::atomic<std::uint64_t> files_committed_together_{0};  // by commit_small_files()
  std::atomic<std::uint64_t> remote_merges_{0}, conflicts_{0}, errors_{0};
  std::atomic<std::uint64_t> file_commit_us_{0}, tree_commit_us_{0}, sync_wait_us_{0};
  std::atomic<std::uint64_t> segments_staged_{0};

  // Durable write-back: files journaled and waiting for upload, in the order they were closed.
  struct Pending {
    std::uint64_t sequence = 0;    // of its journal record
    Clock::time_point not_before;  // after a failure other than an absent server
    bool failing = false;          // the last attempt failed with the servers there
  };
  std::mutex pending_mutex_;
  std::condition_variable upload_cv_;
  std::map<std::uint64_t, Pending> pending_;
  // Stored or removed files whose journal records are being dropped (pending until their space
  // is free).
  std::size_t releasing_ = 0;
  // The uploader gathers files for a round (drain()), and how many came since it began.
  bool gathering_ = false;
  std::size_t gathered_ = 0;
  std::deque<std::uint64_t> pending_order_;
  // The uploader's (drain()): files committed, (ino, sequence), that no durable tree names yet, and
  // since when the oldest of them waits.
  std::set<std::pair<std::uint64_t, std::uint64_t>> unnamed_;
  Clock::time_point unnamed_since_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> gone_records_;  // (ino, sequence) to drop
  std::uint64_t journal_sequence_ = 0;
  bool upload_stop_ = false;
  std::thread uploader_;
  ThreadCache drain_threads_;             // the uploader's helpers, kept between rounds
  ThreadCache upload_threads_;            // batches of an upload on their way
  std::unique_ptr<ServerProber> prober_;  // the uploader's (or, at unmount, stop()'s)
  // Set by a failure that says a server is away, cleared by a probe that finds both.
  std::atomic<bool> servers_down_{false};
  std::atomic<std::uint64_t> writeback_used_{0};
  std::atomic<std::uint64_t> uploads_done_{0};
  // Serializes writes of the journal's tree record, each a snapshot newer than the last.
  std::mutex tree_journal_mutex_;
  std::uint64_t journaled_generation_ = 0;  // what the tree record holds (under the above)
  std::uint64_t journaled_version_ = 0;
  bool journaled_synced_ = true;          // whether that record is synced (or only written)
  std::optional<Bytes> base_tree_bytes_;  // encode_tree(base_tree_), as of the version below
  std::uint64_t base_tree_bytes_version_ = 0;

  std::mutex error_mutex_;
  std::string last_error_;

  struct KnownManifest {
    std::shared_ptr<const StoredObject> object;
    std::uint64_t stamp = 0;
  };
  std::mutex manifests_mutex_;
  std::unordered_map<std::uint64_t, KnownManifest> manifests_;
  std::deque<std::pair<std::uint64_t, std::uint64_t>>
      manifest_order_;  // (ino, stamp), oldest first
  std::size_t manifest_segments_ = 0;
  std::uint64_t manifest_stamp_ = 0;
  cache::SegmentCache::Reservation manifests_room_;  // what manifests_ holds, charged to the cache
  std::atomic<std::int64_t> last_trim_{0};           // Clock ticks of the last trim_memory()
};

// ---- the C callbacks: each finds the Fs and hands over; every path replies exactly once ----

Fs& fs_of(fuse_req_t req) {
  return *static_cast<Fs*>(fuse_req_userdata(req));
}

// Runs a handler; a failure nobody caught becomes EIO instead of a dead mount.
template <class F>
void guarded(fuse_req_t req, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    fs_of(req).log().line(std::string("unexpected failure: ") + e.what());
    fuse_reply_err(req, errno_of(e));
  }
}

const fuse_lowlevel_ops kOps = [] {
  fuse_lowlevel_ops ops{};
  ops.init = [](void* userdata, fuse_conn_info* conn) { static_cast<Fs*>(userdata)->init(conn); };
  ops.lookup = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, [&] { fs_of(req).lookup(req, parent, name); });
  };
  ops.forget = [](fuse_req_t req, fuse_ino_t ino, std::uint64_t n) {
    try {
      fs_of(req).forget(ino, n);
    } catch (const std::exception& e) {
      fs_of(req).log().line(std::string("forget failed: ") + e.what());
    }
    fuse_reply_none(req);
  };
  ops.forget_multi = [](fuse_req_t req, std::size_t count, fuse_forget_data* forgets) {
    try {
      for (std::size_t i = 0; i < count; ++i)
        fs_of(req).forget(forgets[i].ino, forgets[i].nlookup);
    } catch (const std::exception& e) {
      fs_of(req).log().line(std::string("forget failed: ") + e.what());
    }
    fuse_reply_none(req);
  };
  ops.getattr = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
    guarded(req, [&] { fs_of(req).getattr(req, ino); });
  };
  ops.setattr = [](fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
    guarded(req, [&] { fs_of(req).setattr(req, ino, attr, to_set); });
  };
  ops.readlink = [](fuse_req_t req, fuse_ino_t ino) {
    guarded(req, [&] { fs_of(req).readlink(req, ino); });
  };
  ops.mknod = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
    guarded(req, [&] {
      if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISCHR(mode) && !S_ISBLK(mode) &&
          !S_ISSOCK(mode)) {
        fuse_reply_err(req, EINVAL);
        return;
      }
      fs_of(req).make(req, parent, name, mode, rdev, {}, nullptr);
    });
  };
  ops.mkdir = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
    guarded(req,
            [&] { fs_of(req).make(req, parent, name, S_IFDIR | (mode & 07777), 0, {}, nullptr); });
  };
  ops.symlink = [](fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
    guarded(req, [&] { fs_of(req).make(req, parent, name, S_IFLNK | 0777, 0, target, nullptr); });
  };
  ops.create = [](fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                  fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).make(req, parent, name, S_IFREG | (mode & 07777), 0, {}, fi); });
  };
  ops.unlink = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, [&] { fs_of(req).unlink(req, parent, name, false); });
  };
  ops.rmdir = [](fuse_req_t req, fuse_ino_t parent, const char* name) {
    guarded(req, [&] { fs_of(req).unlink(req, parent, name, true); });
  };
  ops.rename = [](fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
                  const char* new_name, unsigned flags) {
    guarded(req, [&] { fs_of(req).rename(req, parent, name, new_parent, new_name, flags); });
  };
  ops.link = [](fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
    guarded(req, [&] { fs_of(req).link(req, ino, parent, name); });
  };
  ops.open = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).open(req, ino, fi); });
  };
  ops.read = [](fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).read(req, ino, size, off, fi); });
  };
  ops.write = [](fuse_req_t req, fuse_ino_t ino, const char* buf, std::size_t size, off_t off,
                 fuse_file_info*) {
    guarded(req, [&] { fs_of(req).write(req, ino, buf, size, off); });
  };
  ops.flush = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).flush(req, ino, fi); });
  };
  ops.release = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).release(req, ino, fi); });
  };
  ops.fsync = [](fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
    guarded(req, [&] { fs_of(req).fsync(req, ino); });
  };
  ops.opendir = [](fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).opendir(req, ino, fi); });
  };
  ops.readdir = [](fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off,
                   fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).readdir(req, ino, size, off, fi, false); });
  };
  ops.readdirplus = [](fuse_req_t req, fuse_ino_t ino, std::size_t size, off_t off,
                       fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).readdir(req, ino, size, off, fi, true); });
  };
  ops.releasedir = [](fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
    guarded(req, [&] { fs_of(req).releasedir(req, fi); });
  };
  ops.fsyncdir = [](fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
    guarded(req, [&] { fs_of(req).fsyncdir(req); });
  };
  ops.statfs = [](fuse_req_t req, fuse_ino_t) { guarded(req, [&] { fs_of(req).statfs(req); }); };
  ops.setxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                    std::size_t size, int flags) {
    guarded(req, [&] { fs_of(req).setxattr(req, ino, name, value, size, flags); });
  };
  ops.getxattr = [](fuse_req_t req, fuse_ino_t ino, const char* name, std::size_t size) {
    guarded(req, [&] { fs_of(req).getxattr(req, ino, name, size); });
  };
  ops.listxattr = [](fuse_req_t req, fuse_ino_t ino, std::size_t size) {
    guarded(req, [&] { fs_of(req).listxattr(req, ino, size); });
  };
  ops.removexattr = [](fuse_req_t req, fuse_ino_t ino, const char* name) {
    guarded(req, [&] { fs_of(req).removexattr(req, ino, name); });
  };
  return ops;
}();

bool parse_size(std::string_view text, std::uint64_t& out) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{})
    return false;
  std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  int shift = 0;
  if (unit == "" || unit == "B")
    shift = 0;
  else if (unit == "K" || unit == "k" || unit == "KiB")
    shift = 10;
  else if (unit == "M" || unit == "m" || unit == "MiB")
    shift = 20;
  else if (unit == "G" || unit == "g" || unit == "GiB")
    shift = 30;
  else
    return false;
  if (value > (std::uint64_t{1} << (63 - shift)))
    return false;
  out = value << shift;
  return true;
}

bool parse_seconds(std::string_view text, double& out) {
  try {
    std::size_t used = 0;
    out = std::stod(std::string(text), &used);
    return used == text.size() && out >= 0 && out <= 86400;
  } catch (const std::exception&) {
    return false;
  }
}

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

}  // namespace

void parse_mount_options(const std::string& list, MountOptions& options) {
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty())
      continue;
    const auto eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    const auto bad = [&] { throw Error("invalid mount option '" + item + "'"); };
    double seconds = 0;
    if (key == "cache_size") {
      if (!parse_size(value, options.cache_bytes))
        bad();
    } else if (key == "readahead") {
      std::uint64_t n = 0;
      if (!parse_size(value, n) || n > 256)
        bad();
      options.readahead_segments = static_cast<std::uint32_t>(n);
    } else if (key == "attr_timeout" || key == "entry_timeout") {
      if (!parse_seconds(value, seconds))
        bad();
      (key == "attr_timeout" ? options.attr_timeout : options.entry_timeout) = seconds;
    } else if (key == "refresh" || key == "commit_delay") {
      if (!parse_seconds(value, seconds) || (key == "refresh" && seconds < 0.1))
        bad();
      (key == "refresh" ? options.refresh : options.commit_delay) = to_ms(seconds);
    } else if (key == "log") {
      if (value.empty())
        bad();
      options.log_file = value;
    } else if (key == "home") {
      if (value.empty())
        bad();
      options.home = value;
    } else if (key == "writeback_size") {
      if (!parse_size(value, options.writeback_bytes) || options.writeback_bytes == 0)
        bad();
    } else if (key == "unmount_wait") {
      if (!parse_seconds(value, seconds))
        bad();
      options.unmount_wait = to_ms(seconds);
    } else if (key == "debug") {
      options.debug = true;
    } else if (key == "noscan") {
      options.scan = false;
    } else if (key == "cache_dir") {
      if (value.empty())
        bad();
      options.cache_dir = fsys::absolute(value);  // the mount may chdir("/") before using it
    } else if (key == "cache_dir_size") {
      if (!parse_size(value, options.cache_dir_bytes) || options.cache_dir_bytes == 0)
        bad();
    } else if (key == "max_read" || key == "max_write" || key == "fsname" || key == "subtype" ||
               key == "default_permissions") {
      continue;  // set by splitfs itself
    } else {
      options.fuse_options.push_back(item);
    }
  }
}

int run_mount(const MountOptions& given) {
  // Segments, batches and FUSE buffers are 128 KiB to a few MiB, allocated and freed all the time:
  // served by mmap/munmap (glibc's default above 128 KiB) each one costs page faults and TLB
  // shootdowns, a third of the CPU a large write costs. Keep them in the heap instead, and bound
  // what the heap may keep. One arena: with several, a segment freed by one thread (an eviction)
  // is not reused by another's next allocation, and each arena grows towards the whole cache
  // (peak RSS of a 1 GiB copy: 415 MB with 4 arenas, 334 MB with one; no throughput lost).
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  mallopt(M_ARENA_MAX, 1);
  MountOptions options = given;
  std::error_code ec;
  options.home = fsys::absolute(options.home, ec);
  options.mountpoint = fsys::weakly_canonical(options.mountpoint, ec);
  if (!options.log_file.empty())
    options.log_file = fsys::absolute(options.log_file, ec);
  if (!fsys::is_directory(options.mountpoint)) {
    std::fprintf(stderr, "splitfs: %s is not a directory\n", options.mountpoint.c_str());
    return 2;
  }
  if (is_mount_point(options.mountpoint)) {
    std::fprintf(stderr, "splitfs: %s is already a mount point\n", options.mountpoint.c_str());
    return 1;
  }
  if (options.debug)
    options.foreground = true;
  if (options.writeback_bytes == 0) {
    const auto space = fsys::space(options.home, ec);
    options.writeback_bytes =
        std::max<std::uint64_t>(std::uint64_t{1} << 30, ec ? 0 : space.available / 4);
  }

  std::unique_ptr<Fs> fs;
  try {
    fs = std::make_unique<Fs>(options);
    fs->load();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "splitfs: cannot mount: %s\n", e.what());
    return 1;
  }

  std::string fuse_opts =
      "default_permissions,fsname=splitfs,subtype=" + std::string(kMountSubtype) +
      ",max_read=" + std::to_string(kMaxIo);
  for (const auto& o : options.fuse_options)
    fuse_opts += "," + o;
  std::vector<std::string> argv_text{"splitfs", "-o", fuse_opts};
  if (options.debug)
    argv_text.emplace_back("-d");
  std::vector<char*> argv;
  argv.reserve(argv_text.size());
  for (auto& a : argv_text)
    argv.push_back(a.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_session* se = fuse_session_new(&args, &kOps, sizeof kOps, fs.get());
  fuse_opt_free_args(&args);  // libfuse may have copied them
  if (!se) {
    std::fprintf(stderr, "splitfs: cannot mount: bad FUSE options '%s'\n", fuse_opts.c_str());
    return 2;
  }
  struct SessionGuard {
    fuse_session* se;
    bool mounted = false;
    bool handlers = false;
    ~SessionGuard() {
      if (handlers)
        fuse_remove_signal_handlers(se);
      if (mounted)
        fuse_session_unmount(se);
      fuse_session_destroy(se);
    }
  } guard{se};
  if (fuse_set_signal_handlers(se) != 0)
    return 1;
  guard.handlers = true;
  if (fuse_session_mount(se, options.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "splitfs: cannot mount on %s (see above)\n", options.mountpoint.c_str());
    return 1;
  }
  guard.mounted = true;
  // The kernel's read-ahead decides how large the reads of a sequential reader reach us: at its
  // default 128 KiB a cold `cat` arrives in 256 KiB requests, at max_read in requests of 1 MiB,
  // a quarter of the round trips through the kernel (cat of 1 GiB cold: 5-12% faster here).
  for (const MountEntry& m : read_mounts()) {
    if (m.where == options.mountpoint && m.type == kMountType) {
      if (const auto ec = set_readahead_kib(m.device, kMaxIo >> 10))
        fs->log().line("kernel read-ahead left at its default: " + ec.message());
    }
  }
  if (fuse_daemonize(options.foreground ? 1 : 0) != 0)
    return 1;
  fs->start(se);
  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, 16);
  fuse_loop_cfg_set_idle_threads(config, 8);
  const int loop = fuse_session_loop_mt(se, config);
  fuse_loop_cfg_destroy(config);
  const bool saved = fs->stop();
  if (loop != 0)
    fs->log().line("the FUSE session ended with an error (" + std::to_string(loop) + ")");
  return saved ? 0 : 1;
}

}  // namespace splitfs::fs
