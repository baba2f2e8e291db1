#include "fs/journal.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <splitfs/errors.hpp>
#include <thread>
#include <utility>

#include "common/wire.hpp"

namespace splitfs::fs {

namespace fsys = std::filesystem;

namespace {

constexpr std::uint32_t kFileMagic = 0x53464A46;  // "SFJF"
constexpr std::uint32_t kTreeMagic = 0x53464A54;  // "SFJT"
constexpr std::uint8_t kFormat = 2;               // 2 added data_digest
constexpr std::uint8_t kOldFileFormat = 1;        // still read
constexpr std::uint8_t kTreeRecordFormat = 1;
constexpr const char* kLockFile = "lock";
constexpr const char* kTreeFile = "tree.rec";
constexpr std::size_t kMaxDataNameBytes = 255;
constexpr std::size_t kMaxSegments = 1u << 24;
constexpr std::size_t kMaxTreeBytes = 1u << 30;
constexpr std::size_t kRefBytes = 2 * 32 + 4;

[[noreturn]] void fail(const std::string& what) {
  throw LocalIoError(what + ": " + std::strerror(errno));
}

std::string file_record(std::uint64_t ino) {
  return "f-" + std::to_string(ino) + ".rec";
}

bool valid_data_name(const std::string& name) {
  return !name.empty() && name.size() <= kMaxDataNameBytes && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos && name != "." && name != ".." && name != kLockFile &&
         !name.ends_with(".rec") && !name.ends_with(".tmp");
}

void write_ref(wire::Writer& w, const SegmentRef& ref) {
  w.raw(ref.shares[0]);
  w.raw(ref.shares[1]);
  w.u32(ref.length);
}

SegmentRef read_ref(wire::Reader& r) {
  SegmentRef ref;
  ref.shares[0] = r.id();
  ref.shares[1] = r.id();
  ref.length = r.u32();
  return ref;
}

std::optional<Bytes> read_whole(const fsys::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  Bytes bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad())
    return std::nullopt;
  return bytes;
}

bool is_record(const std::string& name) {
  return name.starts_with("f-") && name.ends_with(".rec");
}

// Opens dir's lock file and takes it, without waiting; -1 if another process holds it.
int take_lock(const fsys::path& dir) {
  const int fd = ::open((dir / kLockFile).c_str(), O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0)
    return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

Bytes encode_journal_file(const JournalFile& f) {
  Bytes out;
  wire::Writer w(out);
  w.u32(kFileMagic);
  w.u8(kFormat);
  w.u64(f.ino);
  w.u64(f.sequence);
  w.text(f.data_name);
  w.u32(f.segment_bytes);
  w.u64(f.bytes);
  w.u64(f.base_version);
  w.u64(f.base_size);
  w.u32(f.base_segment_bytes);
  w.length(f.base_segments.size());
  for (const auto& ref : f.base_segments)
    write_ref(w, ref);
  w.u32(f.mode);
  w.u64(static_cast<std::uint64_t>(f.mtime_ns));
  w.u64(f.state.base_size);
  w.u64(f.state.valid_base);
  w.u64(f.state.size);
  w.u8(f.state.dirty ? 1 : 0);
  w.length(f.state.local.size());
  for (const auto s : f.state.local)
    w.u64(s);
  w.length(f.state.staged.size());
  for (const auto& [s, ref] : f.state.staged) {
    w.u64(s);
    write_ref(w, ref);
  }
  w.u8(f.data_digest ? 1 : 0);
  if (f.data_digest)
    w.raw(*f.data_digest);
  return out;
}

bool decode_journal_file(ByteView bytes, JournalFile& out) {
  wire::Reader r(bytes);
  JournalFile f;
  if (r.u32() != kFileMagic)
    return false;
  const std::uint8_t format = r.u8();
  if (format != kFormat && format != kOldFileFormat)
    return false;
  f.ino = r.u64();
  f.sequence = r.u64();
  f.data_name = r.text(kMaxDataNameBytes);
  f.segment_bytes = r.u32();
  f.bytes = r.u64();
  f.base_version = r.u64();
  f.base_size = r.u64();
  f.base_segment_bytes = r.u32();
  const std::uint32_t segments = r.count(kMaxSegments, kRefBytes);
  f.base_segments.reserve(segments);
  for (std::uint32_t i = 0; i < segments; ++i)
    f.base_segments.push_back(read_ref(r));
  f.mode = r.u32();
  f.mtime_ns = static_cast<std::int64_t>(r.u64());
  f.state.base_size = r.u64();
  f.state.valid_base = r.u64();
  f.state.size = r.u64();
  f.state.dirty = r.boolean();
  const std::uint32_t local = r.count(kMaxSegments, 8);
  for (std::uint32_t i = 0; i < local; ++i)
    f.state.local.insert(r.u64());
  const std::uint32_t staged = r.count(kMaxSegments, 8 + kRefBytes);
  for (std::uint32_t i = 0; i < staged; ++i) {
    const std::uint64_t s = r.u64();
    f.state.staged[s] = read_ref(r);
  }
  if (format >= 2 && r.boolean())
    f.data_digest = r.id();
  if (!r.done() || !valid_data_name(f.data_name) || f.segment_bytes == 0 ||
      f.state.local.size() != local || f.state.staged.size() != staged) {
    return false;
  }
  out = std::move(f);
  return true;
}

Bytes encode_journal_tree(const JournalTree& t) {
  return encode_journal_tree(t.base_version, encode_tree(t.base), encode_tree(t.local));
}

Bytes encode_journal_tree(std::uint64_t base_version, ByteView base, ByteView local) {
  Bytes out;
  out.reserve(32 + base.size() + local.size());
  wire::Writer w(out);
  w.u32(kTreeMagic);
  w.u8(kTreeRecordFormat);
  w.u64(base_version);
  w.blob(base);
  w.blob(local);
  return out;
}

bool decode_journal_tree(ByteView bytes, JournalTree& out) {
  wire::Reader r(bytes);
  JournalTree t;
  if (r.u32() != kTreeMagic || r.u8() != kTreeRecordFormat)
    return false;
  t.base_version = r.u64();
  const ByteView base = r.blob(kMaxTreeBytes);
  const ByteView local = r.blob(kMaxTreeBytes);
  if (!r.done() || decode_tree(base, t.base) || decode_tree(local, t.local))
    return false;
  out = std::move(t);
  return true;
}

Journal::Journal(const fsys::path& root) : root_(root) {
  std::error_code ec;
  fsys::create_directories(root_, ec);
  if (ec)
    throw LocalIoError("cannot create " + root_.string() + ": " + ec.message());
  fsys::permissions(root_, fsys::perms::owner_all, fsys::perm_options::replace, ec);
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string pattern = (root_ / ("m-" + std::to_string(::getpid()) + "-XXXXXX")).string();
    if (!::mkdtemp(pattern.data()))
      fail("cannot create a write-back folder in " + root_.string());
    const int dir_fd = ::open(pattern.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    const int lock_fd = dir_fd < 0 ? -1 : take_lock(pattern);
    struct stat at_path {};
    struct stat held {};
    // Another mount may claim a folder in the instant before its lock is taken: then it is gone
    // from this path, and a new one is made.
    if (lock_fd >= 0 && ::stat(pattern.c_str(), &at_path) == 0 && ::fstat(dir_fd, &held) == 0 &&
        at_path.st_ino == held.st_ino && at_path.st_dev == held.st_dev) {
      dir_ = pattern;
      dir_fd_ = dir_fd;
      lock_fd_ = lock_fd;
      return;
    }
    if (lock_fd >= 0)
      ::close(lock_fd);
    if (dir_fd >= 0)
      ::close(dir_fd);
  }
  throw LocalIoError("cannot take a write-back folder in " + root_.string());
}

Journal::~Journal() {
  sync_pending();
  bool empty = false;
  {
    std::lock_guard lock(mutex_);
    empty = records_.empty() && !tree_;
  }
  if (empty) {
    std::error_code ec;
    fsys::remove_all(dir_, ec);
  }
  if (dir_fd_ >= 0)
    ::close(dir_fd_);
  if (lock_fd_ >= 0)
    ::close(lock_fd_);
  for (const int fd : orphan_locks_)
    ::close(fd);
}

std::vector<Journal::Orphan> Journal::claim_orphans() {
  std::vector<Orphan> out;
  std::error_code ec;
  std::vector<fsys::path> candidates;
  for (const auto& entry : fsys::directory_iterator(root_, ec)) {
    std::error_code type_ec;
    if (entry.is_directory(type_ec) && !entry.is_symlink(type_ec) && entry.path() != dir_)
      candidates.push_back(entry.path());
  }
  std::sort(candidates.begin(), candidates.end());
  int claimed = 0;
  for (const auto& candidate : candidates) {
    const int lock_fd = take_lock(candidate);
    if (lock_fd < 0)
      continue;  // a running mount's
    Orphan orphan;
    orphan.lock_fd = lock_fd;
    // Renamed first: once it is under a name of this process, no other mount looks at it.
    orphan.dir = dir_.string() + ".claim-" + std::to_string(claimed++);
    if (::rename(candidate.c_str(), orphan.dir.c_str()) != 0) {
      ::close(lock_fd);
      continue;
    }
    for (const auto& entry : fsys::directory_iterator(orphan.dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name == kTreeFile) {
        JournalTree tree;
        const auto bytes = read_whole(entry.path());
        if (bytes && decode_journal_tree(*bytes, tree))
          orphan.tree = std::move(tree);
        else
          orphan.problems.push_back(entry.path().string() + " cannot be read");
      } else if (is_record(name)) {
        JournalFile file;
        const auto bytes = read_whole(entry.path());
        if (bytes && decode_journal_file(*bytes, file) && name == file_record(file.ino))
          orphan.files.push_back(std::move(file));
        else
          orphan.problems.push_back(entry.path().string() + " cannot be read");
      }
    }
    std::sort(orphan.files.begin(), orphan.files.end(),
              [](const JournalFile& a, const JournalFile& b) { return a.sequence < b.sequence; });
    orphan_locks_.push_back(lock_fd);
    out.push_back(std::move(orphan));
  }
  return out;
}

std::string Journal::adopt_data(const Orphan& orphan, const std::string& name) {
  if (!valid_data_name(name))
    throw LocalIoError("a journal names an invalid write-back file: " + name);
  for (int n = 0;; ++n) {
    const std::string mine = "in-" + std::to_string(n) + "-" + name;
    if (::link((orphan.dir / name).c_str(), (dir_ / mine).c_str()) == 0)
      return mine;
    if (errno != EEXIST || n > 1000)
      fail("cannot take over " + (orphan.dir / name).string());
  }
}

void Journal::release_orphan(Orphan& orphan) {
  std::error_code ec;
  fsys::remove_all(orphan.dir, ec);
  if (orphan.lock_fd >= 0) {
    std::erase(orphan_locks_, orphan.lock_fd);
    ::close(orphan.lock_fd);
  }
  orphan.lock_fd = -1;
}

void Journal::write_atomically(const std::string& name, ByteView bytes) {
  const std::string tmp = name + ".tmp";
  const int fd = ::openat(dir_fd_, tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    fail("cannot write " + (dir_ / tmp).string());
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    done += static_cast<std::size_t>(n);
  }
  const bool ok = done == bytes.size() && ::fdatasync(fd) == 0;
  const int e = errno;
  ::close(fd);
  if (!ok || ::renameat(dir_fd_, tmp.c_str(), dir_fd_, name.c_str()) != 0) {
    const int failure = ok ? errno : e;
    ::unlinkat(dir_fd_, tmp.c_str(), 0);
    errno = failure;
    fail("cannot write " + (dir_ / name).string());
  }
  if (::fsync(dir_fd_) != 0)
    fail("cannot sync " + dir_.string());
}

int Journal::write_temporary(const std::string& name, ByteView bytes) {
  const std::string tmp = name + ".tmp";
  const int fd = ::openat(dir_fd_, tmp.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0)
    fail("cannot write " + (dir_ / tmp).string());
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      const int e = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlinkat(dir_fd_, tmp.c_str(), 0);
      errno = e;
      fail("cannot write " + (dir_ / tmp).string());
    }
    done += static_cast<std::size_t>(n);
  }
  return fd;
}

std::uint64_t Journal::put_file_and_tree(const JournalFile& file, int data_fd,
                                         const JournalTree* tree) {
  const Bytes record_bytes = encode_journal_file(file);
  const Bytes tree_bytes = tree ? encode_journal_tree(*tree) : Bytes();
  const std::string record_name = file_record(file.ino);
  std::lock_guard lock(mutex_);
  std::vector<std::pair<int, std::string>> temporaries;  // (fd, final name)
  const auto discard = [&] {
    const int e = errno;
    for (const auto& [fd, name] : temporaries) {
      ::close(fd);
      ::unlinkat(dir_fd_, (name + ".tmp").c_str(), 0);
    }
    errno = e;
  };
  try {
    temporaries.emplace_back(write_temporary(record_name, record_bytes), record_name);
    if (tree)
      temporaries.emplace_back(write_temporary(kTreeFile, tree_bytes), kTreeFile);
  } catch (...) {
    discard();
    throw;
  }
  // Each sync waits for a commit of the file system's journal; issued together they share one.
  std::vector<int> fds{data_fd};
  for (const auto& [fd, name] : temporaries)
    fds.push_back(fd);
  std::vector<int> errors(fds.size(), 0);
  {
    std::vector<std::jthread> syncs;
    for (std::size_t i = 1; i < fds.size(); ++i)
      syncs.emplace_back([&, i] { errors[i] = ::fdatasync(fds[i]) == 0 ? 0 : errno; });
    errors[0] = ::fdatasync(fds[0]) == 0 ? 0 : errno;
  }
  for (const int e : errors) {
    if (e != 0) {
      errno = e;
      discard();
      fail("cannot sync the journal in " + dir_.string());
    }
  }
  for (std::size_t i = 0; i < temporaries.size(); ++i) {
    const auto& [fd, name] = temporaries[i];
    ::close(fd);
    if (::renameat(dir_fd_, (name + ".tmp").c_str(), dir_fd_, name.c_str()) != 0) {
      const int e = errno;
      for (std::size_t k = i; k < temporaries.size(); ++k) {
        if (k > i)
          ::close(temporaries[k].first);
        ::unlinkat(dir_fd_, (temporaries[k].second + ".tmp").c_str(), 0);
      }
      errno = e;
      fail("cannot write " + (dir_ / name).string());
    }
  }
  if (::fsync(dir_fd_) != 0)
    fail("cannot sync " + dir_.string());
  if (tree)
    tree_ = true;
  auto& record = records_[file.ino];
  if (!record.data_name.empty() && record.data_name != file.data_name)
    remove(record.data_name);
  return std::exchange(record, Record{file.sequence, file.data_name, file.bytes}).bytes;
}

std::uint64_t Journal::put_file_and_tree_lazy(const JournalFile& file, int data_fd,
                                              const Bytes* tree) {
  if (!file.data_digest)
    throw LocalIoError("a record put without a sync needs the digest of its data");
  const Bytes record_bytes = encode_journal_file(file);
  const Bytes& tree_bytes = tree ? *tree : record_bytes;
  const std::string record_name = file_record(file.ino);
  const int data_copy = ::fcntl(data_fd, F_DUPFD_CLOEXEC, 0);
  if (data_copy < 0)
    fail("cannot keep a write-back file for the journal's sync");
  std::lock_guard lock(mutex_);
  std::vector<std::pair<int, std::string>> written;  // (fd, final name)
  const auto discard = [&] {
    const int e = errno;
    for (const auto& [fd, name] : written) {
      ::close(fd);
      ::unlinkat(dir_fd_, (name + ".tmp").c_str(), 0);
    }
    ::close(data_copy);
    errno = e;
  };
  try {
    written.emplace_back(write_temporary(record_name, record_bytes), record_name);
    if (tree)
      written.emplace_back(write_temporary(kTreeFile, tree_bytes), kTreeFile);
  } catch (...) {
    discard();
    throw;
  }
  // The record goes in first: a tree naming the file with no record yet would show it empty.
  for (std::size_t i = 0; i < written.size(); ++i) {
    const auto& [fd, name] = written[i];
    if (::renameat(dir_fd_, (name + ".tmp").c_str(), dir_fd_, name.c_str()) != 0) {
      const int e = errno;
      for (std::size_t k = i; k < written.size(); ++k)
        ::unlinkat(dir_fd_, (written[k].second + ".tmp").c_str(), 0);
      // The records renamed already stay, to be synced like any other.
      for (std::size_t k = 0; k < written.size(); ++k) {
        if (k < i)
          unsynced_fds_.push_back(written[k].first);
        else
          ::close(written[k].first);
      }
      unsynced_fds_.push_back(data_copy);
      errno = e;
      fail("cannot write " + (dir_ / name).string());
    }
  }
  for (const auto& [fd, name] : written) {
    if (name == kTreeFile)
      keep_unsynced_tree_locked(fd);
    else
      unsynced_fds_.push_back(fd);
  }
  unsynced_fds_.push_back(data_copy);
  ++unsynced_records_;
  if (tree)
    tree_ = true;
  auto& record = records_[file.ino];
  if (!record.data_name.empty() && record.data_name != file.data_name)
    removals_after_sync_.push_back(record.data_name);
  return std::exchange(record, Record{file.sequence, file.data_name, file.bytes}).bytes;
}

bool Journal::sync_pending() {
  std::lock_guard sync_lock(sync_mutex_);
  std::vector<int> fds;
  std::vector<std::string> removals;
  {
    std::lock_guard lock(mutex_);
    fds.swap(unsynced_fds_);
    if (unsynced_tree_fd_ >= 0)
      fds.push_back(std::exchange(unsynced_tree_fd_, -1));
    removals.swap(removals_after_sync_);
    unsynced_records_ = 0;
  }
  if (fds.empty() && removals.empty())
    return true;
  // Start the write-out of every file first, so that their blocks are allocated and the first
  // fdatasync's commit of the file system covers them all; the others then find their data on
  // disk and their metadata committed.
  for (const int fd : fds)
    ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  bool ok = true;
  for (const int fd : fds)
    ok = ::fdatasync(fd) == 0 && ok;
  ok = ::fsync(dir_fd_) == 0 && ok;
  if (!ok) {
    // Tried again at the next call; nothing is removed before its replacement is durable.
    std::lock_guard lock(mutex_);
    unsynced_fds_.insert(unsynced_fds_.end(), fds.begin(), fds.end());
    removals_after_sync_.insert(removals_after_sync_.end(), removals.begin(), removals.end());
    unsynced_records_ += 1;
    return false;
  }
  for (const int fd : fds)
    ::close(fd);
  std::lock_guard lock(mutex_);
  for (const auto& name : removals)
    remove(name);
  return true;
}

std::size_t Journal::unsynced() const {
  std::lock_guard lock(mutex_);
  return unsynced_records_;
}

std::array<std::uint8_t, 32> digest_data_file(int fd, std::uint64_t size) {
  const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                    &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw LocalIoError("cannot compute a digest");
  Bytes buffer(std::min<std::uint64_t>(size, 1u << 20));
  for (std::uint64_t at = 0; at < size;) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), size - at));
    std::size_t got = 0;
    while (got < want) {
      const ssize_t n = ::pread(fd, buffer.data() + got, want - got, static_cast<off_t>(at + got));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        fail("cannot read a write-back file");
      if (n == 0)
        break;
      got += static_cast<std::size_t>(n);
    }
    std::fill(buffer.begin() + static_cast<std::ptrdiff_t>(got),
              buffer.begin() + static_cast<std::ptrdiff_t>(want), std::uint8_t{0});
    if (EVP_DigestUpdate(ctx.get(), buffer.data(), want) != 1)
      throw LocalIoError("cannot compute a digest");
    at += want;
  }
  std::array<std::uint8_t, 32> out{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out.data(), &length) != 1 || length != out.size())
    throw LocalIoError("cannot compute a digest");
  return out;
}

void Journal::remove(const std::string& name) {
  ::unlinkat(dir_fd_, name.c_str(), 0);
}

std::uint64_t Journal::put_file(const JournalFile& file) {
  std::lock_guard lock(mutex_);
  write_atomically(file_record(file.ino), encode_journal_file(file));
  auto& record = records_[file.ino];
  if (!record.data_name.empty() && record.data_name != file.data_name)
    remove(record.data_name);
  return std::exchange(record, Record{file.sequence, file.data_name, file.bytes}).bytes;
}

std::uint64_t Journal::drop_file(std::uint64_t ino, std::uint64_t sequence) {
  std::lock_guard lock(mutex_);
  const auto it = records_.find(ino);
  if (it == records_.end() || it->second.sequence != sequence)
    return 0;
  // The record goes first: a data file without a record is garbage, a record without its data
  // file would be a loss.
  remove(file_record(ino));
  ::fsync(dir_fd_);
  remove(it->second.data_name);
  const std::uint64_t bytes = it->second.bytes;
  records_.erase(it);
  return bytes;
}

std::uint64_t Journal::drop_files(
    const std::vector<std::pair<std::uint64_t, std::uint64_t>>& files) {
  std::lock_guard lock(mutex_);
  std::vector<std::map<std::uint64_t, Record>::iterator> dropped;
  for (const auto& [ino, sequence] : files) {
    const auto it = records_.find(ino);
    if (it == records_.end() || it->second.sequence != sequence ||
        std::find(dropped.begin(), dropped.end(), it) != dropped.end()) {
      continue;
    }
    remove(file_record(ino));
    dropped.push_back(it);
  }
  if (dropped.empty())
    return 0;
  // As in drop_file(): the records go (durably) before their data files.
  ::fsync(dir_fd_);
  std::uint64_t bytes = 0;
  for (const auto it : dropped) {
    remove(it->second.data_name);
    bytes += it->second.bytes;
    records_.erase(it);
  }
  return bytes;
}

std::optional<std::pair<std::uint64_t, std::string>> Journal::current(std::uint64_t ino) const {
  std::lock_guard lock(mutex_);
  const auto it = records_.find(ino);
  if (it == records_.end())
    return std::nullopt;
  return std::make_pair(it->second.sequence, it->second.data_name);
}

void Journal::put_tree(const JournalTree& tree) {
  const Bytes bytes = encode_journal_tree(tree);
  std::lock_guard lock(mutex_);
  write_atomically(kTreeFile, bytes);
  tree_ = true;
}

void Journal::put_tree_lazy(const Bytes& tree_record) {
  std::lock_guard lock(mutex_);
  const int fd = write_temporary(kTreeFile, tree_record);
  const std::string tmp = std::string(kTreeFile) + ".tmp";
  if (::renameat(dir_fd_, tmp.c_str(), dir_fd_, kTreeFile) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlinkat(dir_fd_, tmp.c_str(), 0);
    errno = e;
    fail("cannot write " + (dir_ / kTreeFile).string());
  }
  keep_unsynced_tree_locked(fd);
  ++unsynced_records_;
  tree_ = true;
}

void Journal::keep_unsynced_tree_locked(int fd) {
  // Only the newest tree record needs the sync: the ones it replaced are gone from the folder.
  if (unsynced_tree_fd_ >= 0)
    ::close(unsynced_tree_fd_);
  unsynced_tree_fd_ = fd;
}

void Journal::drop_tree() {
  std::lock_guard lock(mutex_);
  if (!tree_)
    return;
  remove(kTreeFile);
  ::fsync(dir_fd_);
  tree_ = false;
}

bool Journal::has_tree() const {
  std::lock_guard lock(mutex_);
  return tree_;
}

std::size_t Journal::file_count() const {
  std::lock_guard lock(mutex_);
  return records_.size();
}

std::uint64_t Journal::bytes() const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& [ino, r] : records_)
    total += r.bytes;
  return total;
}

JournalSummary summarize_journal(const fsys::path& path) {
  JournalSummary out;
  std::error_code ec;
  std::vector<fsys::path> dirs;
  if (fsys::exists(path / kLockFile, ec) || fsys::exists(path / kTreeFile, ec)) {
    dirs.push_back(path);
  } else {
    for (const auto& entry : fsys::directory_iterator(path, ec)) {
      std::error_code type_ec;
      if (entry.is_directory(type_ec))
        dirs.push_back(entry.path());
    }
  }
  for (const auto& dir : dirs) {
    bool any = false;
    for (const auto& entry : fsys::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name == kTreeFile) {
        out.tree = any = true;
      } else if (is_record(name)) {
        JournalFile file;
        const auto bytes = read_whole(entry.path());
        if (bytes && decode_journal_file(*bytes, file)) {
          ++out.files;
          out.bytes += file.bytes;
          any = true;
        }
      }
    }
    if (any)
      out.dirs.push_back(dir);
  }
  return out;
}

}  // namespace splitfs::fs
