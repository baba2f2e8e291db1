#include "fs/journal.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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
constexpr std::uint32_t kNameMagic = 0x53464A4E;  // "SFJN"
constexpr std::uint8_t kNameFormat = 1;
constexpr std::uint8_t kFormat = 2;         // 2 added data_digest
constexpr std::uint8_t kOldFileFormat = 1;  // still read
constexpr std::uint8_t kTreeRecordFormat = 1;
constexpr const char* kLockFile = "lock";
// The tree record's two slots (journal.hpp); a slot is a header, then the record.
constexpr std::array<const char*, 2> kTreeSlots{"tree.rec", "tree-2.rec"};
constexpr std::uint32_t kSlotMagic = 0x53464A53;  // "SFJS"
constexpr std::uint8_t kSlotFormat = 1;
constexpr std::size_t kSlotHeaderBytes = 4 + 1 + 8 + 8 + 4;  // magic, format, sequence, size, CRC
constexpr std::size_t kNameHeaderBytes = 8 + 4 + 4;          // slot sequence, size, CRC
constexpr std::size_t kMaxNameRecordBytes = 512;
constexpr std::size_t kMaxDataNameBytes = 255;
constexpr std::size_t kMaxSegments = 1u << 24;
constexpr std::size_t kMaxTreeBytes = 1u << 30;
constexpr std::size_t kRefBytes = 2 * 32 + 4;
// Dropped file records kept (renamed) for reuse: each new one would cost the file system an inode.
constexpr std::size_t kMaxSpareRecords = 256;
// Dropped small data files kept (emptied) for new write-back files, for the same reason.
constexpr std::size_t kMaxSpareData = 1024;
// Dropped small data files wait for sweep() (journal.hpp), up to these bounds.
constexpr std::uint64_t kMaxBuriedFileBytes = 64u << 10;
constexpr std::size_t kMaxBuried = 4096;
constexpr std::uint64_t kMaxBuriedBytes = 32u << 20;

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

// Writes all of bytes at offset at; false (errno set) when the disk refused.
bool write_all(int fd, ByteView bytes, off_t at) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, at + static_cast<off_t>(done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      if (n == 0)
        errno = EIO;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool is_tree_slot(const std::string& name) {
  return name == kTreeSlots[0] || name == kTreeSlots[1];
}

std::uint32_t crc_of(ByteView bytes) {
  return static_cast<std::uint32_t>(crc32_z(0, bytes.data(), bytes.size()));
}

// The names appended to a slot after its record (from `at`, written with its sequence), up to the
// first that is not whole.
std::vector<TreeName> appended_names(ByteView slot, std::size_t at, std::uint64_t sequence) {
  std::vector<TreeName> names;
  while (slot.size() - at >= kNameHeaderBytes) {
    wire::Reader r(slot.subspan(at, kNameHeaderBytes));
    const std::uint64_t written_in = r.u64();
    const std::uint32_t size = r.u32();
    const std::uint32_t crc = r.u32();
    at += kNameHeaderBytes;
    if (written_in != sequence || size > slot.size() - at)
      break;
    const ByteView bytes = slot.subspan(at, size);
    TreeName name;
    if (crc_of(bytes) != crc || !decode_tree_name(bytes, name))
      break;
    names.push_back(std::move(name));
    at += size;
  }
  return names;
}

// The newest whole tree record of the folder dir, and the names appended to it; `present` says
// whether it has a slot at all. A slot without a header (a tree.rec of the format before the
// slots) is older than any with one.
std::optional<Bytes> read_tree_record(const fsys::path& dir, bool& present,
                                      std::vector<TreeName>& names) {
  std::optional<Bytes> newest;
  std::uint64_t newest_sequence = 0;
  present = false;
  for (const char* slot : kTreeSlots) {
    std::error_code ec;
    if (!fsys::exists(dir / slot, ec))
      continue;
    present = true;
    auto bytes = read_whole(dir / slot);
    if (!bytes)
      continue;
    wire::Reader r(*bytes);
    if (r.u32() != kSlotMagic) {
      if (!newest)
        newest = std::move(bytes);
      continue;
    }
    if (r.u8() != kSlotFormat)
      continue;
    const std::uint64_t sequence = r.u64();
    const std::uint64_t size = r.u64();
    const std::uint32_t crc = r.u32();
    if (r.failure() != wire::Reader::Failure::none || size > bytes->size() - kSlotHeaderBytes)
      continue;
    const ByteView record(bytes->data() + kSlotHeaderBytes, static_cast<std::size_t>(size));
    if (crc_of(record) != crc || (newest && sequence <= newest_sequence))
      continue;
    newest = Bytes(record.begin(), record.end());
    newest_sequence = sequence;
    names = appended_names(*bytes, kSlotHeaderBytes + record.size(), sequence);
  }
  return newest;
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

Bytes encode_tree_name(const TreeName& n) {
  Bytes out;
  wire::Writer w(out);
  w.u32(kNameMagic);
  w.u8(kNameFormat);
  w.u64(n.parent);
  w.text(n.name);
  w.u64(n.ino);
  w.u32(n.record.mode);
  w.u32(n.record.uid);
  w.u32(n.record.gid);
  w.u64(n.record.size);
  w.u64(static_cast<std::uint64_t>(n.record.atime_ns));
  w.u64(static_cast<std::uint64_t>(n.record.mtime_ns));
  w.u64(static_cast<std::uint64_t>(n.record.ctime_ns));
  w.u64(n.record.content_version);
  return out;
}

bool decode_tree_name(ByteView bytes, TreeName& out) {
  wire::Reader r(bytes);
  TreeName n;
  if (r.u32() != kNameMagic || r.u8() != kNameFormat)
    return false;
  n.parent = r.u64();
  n.name = r.text(kMaxNameBytes);
  n.ino = r.u64();
  n.record.mode = r.u32();
  n.record.uid = r.u32();
  n.record.gid = r.u32();
  n.record.size = r.u64();
  n.record.atime_ns = static_cast<std::int64_t>(r.u64());
  n.record.mtime_ns = static_cast<std::int64_t>(r.u64());
  n.record.ctime_ns = static_cast<std::int64_t>(r.u64());
  n.record.content_version = r.u64();
  if (!r.done() || !valid_name(n.name) || !S_ISREG(n.record.mode) || n.ino <= kRootIno ||
      n.ino == n.parent) {
    return false;
  }
  out = std::move(n);
  return true;
}

std::size_t apply_tree_names(Tree& tree, const std::vector<TreeName>& names) {
  std::size_t moved = 0;
  for (const auto& n : names) {
    if (tree.inodes.contains(n.ino))
      continue;
    const auto dir = tree.inodes.find(n.parent);
    const bool home = dir != tree.inodes.end() && S_ISDIR(dir->second.mode);
    InodeRecord& parent = home ? dir->second : tree.inodes.at(kRootIno);
    std::string name = n.name;
    if (!home || parent.entries.contains(name)) {
      ++moved;
      const std::string suffix = ".recovered-" + std::to_string(n.ino);
      const std::string base = valid_name(n.name + suffix) ? n.name + suffix : suffix.substr(1);
      name = base;
      for (int k = 1; parent.entries.contains(name); ++k)
        name = base + "-" + std::to_string(k);
    }
    parent.entries.emplace(name, n.ino);
    // The directory's times, as the file's creation left them (its ctime is that moment).
    parent.mtime_ns = std::max(parent.mtime_ns, n.record.ctime_ns);
    parent.ctime_ns = std::max(parent.ctime_ns, n.record.ctime_ns);
    tree.inodes.emplace(n.ino, n.record);
    tree.next_ino = std::max(tree.next_ino, n.ino + 1);
  }
  return moved;
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
  sweep();
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
  for (const int fd : slot_fds_) {
    if (fd >= 0)
      ::close(fd);
  }
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
      if (is_record(name)) {
        JournalFile file;
        const auto bytes = read_whole(entry.path());
        if (bytes && decode_journal_file(*bytes, file) && name == file_record(file.ino))
          orphan.files.push_back(std::move(file));
        else
          orphan.problems.push_back(entry.path().string() + " cannot be read");
      }
    }
    bool present = false;
    std::vector<TreeName> names;
    const auto tree_bytes = read_tree_record(orphan.dir, present, names);
    JournalTree tree;
    if (tree_bytes && decode_journal_tree(*tree_bytes, tree)) {
      if (const std::size_t moved = apply_tree_names(tree.local, names); moved > 0) {
        orphan.problems.push_back(std::to_string(moved) + " new file(s) in " + orphan.dir.string() +
                                  " named as NAME.recovered-INO: their name or folder was taken");
      }
      orphan.tree = std::move(tree);
    } else if (present)
      orphan.problems.push_back("the tree record in " + orphan.dir.string() + " cannot be read");
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
    std::string mine = "in-" + std::to_string(n) + "-" + name;
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
  const bool ok = write_all(fd, bytes, 0) && ::fdatasync(fd) == 0;
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

Journal::Temporary Journal::write_temporary(const std::string& name, ByteView bytes) {
  Temporary out;
  // A spare record's file is written where it is: a spare is never read, so it serves as the
  // temporary name too, and one rename puts it in place.
  while (out.fd < 0 && !spare_records_.empty()) {
    out.name = std::move(spare_records_.back());
    spare_records_.pop_back();
    out.fd = ::openat(dir_fd_, out.name.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  }
  if (out.fd < 0) {
    out.name = name + ".tmp";
    out.fd = ::openat(dir_fd_, out.name.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  }
  if (out.fd < 0)
    fail("cannot write " + (dir_ / out.name).string());
  if (!write_all(out.fd, bytes, 0) || ::ftruncate(out.fd, static_cast<off_t>(bytes.size())) != 0) {
    const int e = errno;
    ::close(out.fd);
    ::unlinkat(dir_fd_, out.name.c_str(), 0);
    errno = e;
    fail("cannot write " + (dir_ / out.name).string());
  }
  return out;
}

void Journal::bury_locked(const std::string& name, std::uint64_t bytes) {
  if (bytes > kMaxBuriedFileBytes || buried_.size() >= kMaxBuried ||
      buried_bytes_ + bytes > kMaxBuriedBytes) {
    remove(name);
    return;
  }
  buried_.push_back(name);
  buried_bytes_ += bytes;
}

void Journal::sweep() {
  std::lock_guard lock(mutex_);
  for (const auto& name : buried_)
    remove(name);
  buried_.clear();
  buried_bytes_ = 0;
}

void Journal::retire_record_locked(const std::string& name) {
  if (spare_records_.size() < kMaxSpareRecords) {
    std::string spare = "spare-" + std::to_string(next_spare_++);
    if (::renameat(dir_fd_, name.c_str(), dir_fd_, spare.c_str()) == 0) {
      spare_records_.push_back(std::move(spare));
      return;
    }
  }
  remove(name);
}

void Journal::retire_data_locked(const std::string& name, std::uint64_t bytes) {
  if (bytes <= kMaxBuriedFileBytes && spare_data_.size() < kMaxSpareData) {
    const int fd = ::openat(dir_fd_, name.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      ::close(fd);
      spare_data_.push_back(name);
      return;
    }
  }
  bury_locked(name, bytes);
}

std::pair<int, std::string> Journal::new_data_file() {
  {
    std::lock_guard lock(mutex_);
    while (!spare_data_.empty()) {
      std::string name = std::move(spare_data_.back());
      spare_data_.pop_back();
      const int fd = ::openat(dir_fd_, name.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
      if (fd >= 0)
        return {fd, std::move(name)};
      remove(name);
    }
  }
  return create_writeback_file(dir_);
}

Journal::SyncedPut Journal::put_file_synced(const JournalFile& file, int data_fd) {
  const Bytes record_bytes = encode_journal_file(file);
  const std::string record_name = file_record(file.ino);
  std::lock_guard lock(mutex_);
  const Temporary temporary = write_temporary(record_name, record_bytes);
  const int record_fd = temporary.fd;
  const std::string& tmp = temporary.name;
  // Each sync waits for a commit of the file system's journal; issued together they share one.
  int errors[2] = {0, 0};
  {
    std::jthread record_sync([&] { errors[1] = ::fdatasync(record_fd) == 0 ? 0 : errno; });
    errors[0] = ::fdatasync(data_fd) == 0 ? 0 : errno;
  }
  ::close(record_fd);
  for (const int e : errors) {
    if (e != 0) {
      ::unlinkat(dir_fd_, tmp.c_str(), 0);
      errno = e;
      fail("cannot sync the journal in " + dir_.string());
    }
  }
  if (::renameat(dir_fd_, tmp.c_str(), dir_fd_, record_name.c_str()) != 0) {
    const int e = errno;
    ::unlinkat(dir_fd_, tmp.c_str(), 0);
    errno = e;
    fail("cannot write " + (dir_ / record_name).string());
  }
  const bool durable = ::fsync(dir_fd_) == 0;
  auto& record = records_[file.ino];
  if (!record.data_name.empty() && record.data_name != file.data_name) {
    if (durable) {
      remove(record.data_name);
    } else {
      removals_after_sync_.push_back(record.data_name);
    }
  }
  if (!durable)
    folder_unsynced_ = true;
  return {std::exchange(record, Record{file.sequence, file.data_name, file.bytes}).bytes, durable};
}

std::uint64_t Journal::put_file_lazy(const JournalFile& file, int data_fd) {
  if (!file.data_digest)
    throw LocalIoError("a record put without a sync needs the digest of its data");
  const Bytes record_bytes = encode_journal_file(file);
  const std::string record_name = file_record(file.ino);
  const int data_copy = ::fcntl(data_fd, F_DUPFD_CLOEXEC, 0);
  if (data_copy < 0)
    fail("cannot keep a write-back file for the journal's sync");
  std::lock_guard lock(mutex_);
  Temporary temporary;
  try {
    temporary = write_temporary(record_name, record_bytes);
  } catch (...) {
    ::close(data_copy);
    throw;
  }
  const int record_fd = temporary.fd;
  const std::string& tmp = temporary.name;
  if (::renameat(dir_fd_, tmp.c_str(), dir_fd_, record_name.c_str()) != 0) {
    const int e = errno;
    ::close(record_fd);
    ::close(data_copy);
    ::unlinkat(dir_fd_, tmp.c_str(), 0);
    errno = e;
    fail("cannot write " + (dir_ / record_name).string());
  }
  unsynced_fds_.push_back(record_fd);
  unsynced_fds_.push_back(data_copy);
  ++unsynced_records_;
  auto& record = records_[file.ino];
  if (!record.data_name.empty() && record.data_name != file.data_name)
    removals_after_sync_.push_back(record.data_name);
  return std::exchange(record, Record{file.sequence, file.data_name, file.bytes}).bytes;
}

bool Journal::sync_pending() {
  std::lock_guard sync_lock(sync_mutex_);
  std::vector<int> fds;
  std::vector<std::string> removals;
  int slot = -1;  // the working tree slot, when it waits for a sync
  std::uint64_t slot_sequence = 0;
  int names_slot = -1;  // the synced slot names were appended to since
  std::size_t names = 0;
  bool folder = false;
  {
    std::lock_guard lock(mutex_);
    fds.swap(unsynced_fds_);
    if (tree_unsynced_) {
      slot = working_slot_;
    } else if (names_unsynced_) {
      names_slot = newest_slot_;
    }
    slot_sequence = tree_sequence_;
    names = names_;
    removals.swap(removals_after_sync_);
    unsynced_records_ = 0;
    folder = std::exchange(folder_unsynced_, false);
  }
  if (fds.empty() && removals.empty() && slot < 0 && names_slot < 0 && !folder)
    return true;
  // Slot descriptors stay open while sync_mutex_ is held (drop_tree() takes it too).
  std::vector<int> all = fds;
  for (const int s : {slot, names_slot}) {
    if (s >= 0)
      all.push_back(slot_fds_[static_cast<std::size_t>(s)]);
  }
  // Start the write-out of every file first, so that their blocks are allocated and the first
  // fdatasync's commit of the file system covers them all; the others then find their data on
  // disk and their metadata committed.
  for (const int fd : all)
    ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  bool ok = true;
  for (const int fd : all)
    ok = ::fdatasync(fd) == 0 && ok;
  ok = ::fsync(dir_fd_) == 0 && ok;
  if (!ok) {
    // Tried again at the next call; nothing is removed before its replacement is durable.
    std::lock_guard lock(mutex_);
    unsynced_fds_.insert(unsynced_fds_.end(), fds.begin(), fds.end());
    removals_after_sync_.insert(removals_after_sync_.end(), removals.begin(), removals.end());
    unsynced_records_ += 1;
    folder_unsynced_ = true;
    return false;
  }
  for (const int fd : fds)
    ::close(fd);
  std::lock_guard lock(mutex_);
  // A write to the slot since the sync began may not be covered: the slot stays the working one.
  if (slot >= 0 && tree_unsynced_ && working_slot_ == slot && tree_sequence_ == slot_sequence)
    tree_slot_synced_locked();
  if (tree_sequence_ == slot_sequence && names_ == names)
    names_unsynced_ = false;
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
  retire_record_locked(file_record(ino));
  ::fsync(dir_fd_);
  bury_locked(it->second.data_name, it->second.bytes);
  const std::uint64_t bytes = it->second.bytes;
  records_.erase(it);
  return bytes;
}

std::uint64_t Journal::drop_files(const std::vector<Drop>& files) {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::map<std::uint64_t, Record>::iterator, bool>> dropped;
  for (const auto& drop : files) {
    const auto it = records_.find(drop.ino);
    if (it == records_.end() || it->second.sequence != drop.sequence ||
        std::any_of(dropped.begin(), dropped.end(), [&](const auto& d) { return d.first == it; })) {
      continue;
    }
    retire_record_locked(file_record(drop.ino));
    dropped.emplace_back(it, drop.data_released);
  }
  if (dropped.empty())
    return 0;
  // As in drop_file(): the records go (durably) before their data files.
  ::fsync(dir_fd_);
  std::uint64_t bytes = 0;
  for (const auto& [it, released] : dropped) {
    if (released)
      retire_data_locked(it->second.data_name, it->second.bytes);
    else
      bury_locked(it->second.data_name, it->second.bytes);
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
  put_tree_durably_locked(bytes);
}

void Journal::put_tree_lazy(const Bytes& tree_record) {
  std::lock_guard lock(mutex_);
  write_tree_slot_locked(tree_record);
  ++unsynced_records_;
}

void Journal::write_tree_slot_locked(ByteView tree_record) {
  const auto slot = static_cast<std::size_t>(working_slot_);
  if (slot_fds_[slot] < 0) {
    slot_fds_[slot] = ::openat(dir_fd_, kTreeSlots[slot], O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (slot_fds_[slot] < 0)
      fail("cannot write " + (dir_ / kTreeSlots[slot]).string());
  }
  Bytes header;
  header.reserve(kSlotHeaderBytes);
  wire::Writer w(header);
  w.u32(kSlotMagic);
  w.u8(kSlotFormat);
  w.u64(tree_sequence_ + 1);
  w.u64(tree_record.size());
  w.u32(crc_of(tree_record));
  // In place, without truncating: the header says where the record ends. A write cut short
  // leaves a slot whose CRC fails, and the other slot counts.
  if (!write_all(slot_fds_[slot], header, 0) ||
      !write_all(slot_fds_[slot], tree_record, static_cast<off_t>(header.size()))) {
    fail("cannot write " + (dir_ / kTreeSlots[slot]).string());
  }
  ++tree_sequence_;
  tree_unsynced_ = true;
  tree_ = true;
  newest_slot_ = working_slot_;
  names_end_ = header.size() + tree_record.size();
  names_ = 0;
  names_unsynced_ = false;
}

bool Journal::append_tree_name(const TreeName& name) {
  const Bytes payload = encode_tree_name(name);
  if (payload.size() > kMaxNameRecordBytes)
    return false;
  Bytes bytes;
  bytes.reserve(kNameHeaderBytes + payload.size());
  wire::Writer w(bytes);
  std::lock_guard lock(mutex_);
  if (!tree_ || names_ >= kMaxTreeNames)
    return false;
  w.u64(tree_sequence_);
  w.u32(static_cast<std::uint32_t>(payload.size()));
  w.u32(crc_of(payload));
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  const auto slot = static_cast<std::size_t>(newest_slot_);
  // After the record; a write cut short ends the names there.
  if (!write_all(slot_fds_[slot], bytes, static_cast<off_t>(names_end_)))
    fail("cannot write " + (dir_ / kTreeSlots[slot]).string());
  names_end_ += bytes.size();
  ++names_;
  names_unsynced_ = true;  // with the record it goes with, which counts in unsynced()
  return true;
}

void Journal::put_tree_durably_locked(ByteView tree_record) {
  write_tree_slot_locked(tree_record);
  if (::fdatasync(slot_fds_[static_cast<std::size_t>(working_slot_)]) != 0 ||
      ::fsync(dir_fd_) != 0) {
    fail("cannot sync the journal in " + dir_.string());
  }
  tree_slot_synced_locked();
}

void Journal::tree_slot_synced_locked() {
  tree_unsynced_ = false;
  working_slot_ ^= 1;
}

void Journal::drop_tree() {
  std::lock_guard sync_lock(sync_mutex_);
  std::lock_guard lock(mutex_);
  if (!tree_)
    return;
  for (std::size_t slot = 0; slot < slot_fds_.size(); ++slot) {
    remove(kTreeSlots[slot]);
    if (slot_fds_[slot] >= 0)
      ::close(std::exchange(slot_fds_[slot], -1));
  }
  ::fsync(dir_fd_);
  tree_ = false;
  tree_unsynced_ = false;
  names_ = 0;
  names_unsynced_ = false;
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
  if (fsys::exists(path / kLockFile, ec) || fsys::exists(path / kTreeSlots[0], ec) ||
      fsys::exists(path / kTreeSlots[1], ec)) {
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
      if (is_tree_slot(name)) {
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
