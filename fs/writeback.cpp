#include "fs/writeback.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <splitfs/errors.hpp>
#include <string>
#include <tuple>

namespace splitfs::fs {

namespace {

[[noreturn]] void fail(const std::string& what) {
  const int e = errno;
  throw WriteBackError(what + ": " + std::strerror(e), e);
}

}  // namespace

WriteBack::WriteBack(const std::filesystem::path& dir, std::uint32_t segment_bytes,
                     std::uint64_t base_size, FileSource source)
    : dir_(dir), source_(std::move(source)), segment_bytes_(segment_bytes) {
  std::tie(fd_, name_) = create_file();
  base_size_ = valid_base_ = size_ = base_size;
}

WriteBack::WriteBack(const std::filesystem::path& dir, std::uint32_t segment_bytes,
                     const State& state, const std::string& name, FileSource source)
    : dir_(dir),
      name_(name),
      frozen_(true),
      source_(std::move(source)),
      segment_bytes_(segment_bytes) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
    throw WriteBackError("a write-back file name is not valid: " + name, EINVAL);
  for (const auto s : state.local) {
    if (segment_start(s) >= state.size)
      throw WriteBackError("a journaled write-back state names a segment past its size", EINVAL);
  }
  for (const auto& [s, ref] : state.staged) {
    if (!state.local.contains(s))
      throw WriteBackError("a journaled write-back state stages a segment it lacks", EINVAL);
  }
  if (state.valid_base > state.base_size)
    throw WriteBackError("a journaled write-back state is inconsistent", EINVAL);
  fd_ = ::open((dir / name).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd_ < 0)
    fail("cannot open the write-back file " + (dir / name).string());
  base_size_ = state.base_size;
  valid_base_ = state.valid_base;
  size_ = state.size;
  local_ = state.local;
  staged_ = state.staged;
  dirty_ = state.dirty;
  for (const auto s : local_) {
    touch(s);
    if (!staged_.contains(s))
      unstaged_.insert(s);
  }
}

WriteBack::~WriteBack() {
  if (fd_ >= 0)
    ::close(fd_);
  if (!frozen_ && !name_.empty())
    ::unlink((dir_ / name_).c_str());
}

std::pair<int, std::string> create_writeback_file(const std::filesystem::path& dir) {
  std::string path = (dir / "wb-XXXXXX").string();
  const int fd = ::mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0)
    fail("cannot create a write-back file in " + dir.string());
  return {fd, std::filesystem::path(path).filename().string()};
}

std::pair<int, std::string> WriteBack::create_file() const {
  return source_ ? source_() : create_writeback_file(dir_);
}

void WriteBack::thaw(bool copy) {
  if (!frozen_) {
    if (fd_ < 0)  // released by reset(): the first change makes a new file
      std::tie(fd_, name_) = create_file();
    return;
  }
  int fd = -1;
  std::string name;
  std::tie(fd, name) = create_file();
  const auto discard = [&] {
    const int e = errno;
    ::close(fd);
    ::unlink((dir_ / name).c_str());
    errno = e;
  };
  if (copy) {
    Bytes buffer;
    for (const auto s : local_) {
      if (!holds(s) || segment_start(s) >= size_)
        continue;
      buffer.resize(segment_length(s));
      try {
        read_local(segment_start(s), buffer);
      } catch (...) {
        discard();
        throw;
      }
      for (std::size_t done = 0; done < buffer.size();) {
        const ssize_t w = ::pwrite(fd, buffer.data() + done, buffer.size() - done,
                                   static_cast<off_t>(segment_start(s) + done));
        if (w < 0 && errno == EINTR)
          continue;
        if (w <= 0) {
          discard();
          fail("cannot copy a write-back file");
        }
        done += static_cast<std::size_t>(w);
      }
    }
  }
  // The frozen file is the journal's now: only this process's handle on it goes.
  ::close(fd_);
  fd_ = fd;
  name_ = std::move(name);
  frozen_ = false;
}

void WriteBack::reset(std::uint64_t base_size) {
  ++changes_;
  if (frozen_) {
    // The frozen file is the journal's; a new one is made only when something is written again
    // (most files are not, once stored).
    ::close(fd_);
    fd_ = -1;
    name_.clear();
    frozen_ = false;
  } else if (fd_ >= 0 && ::ftruncate(fd_, 0) != 0) {
    fail("cannot empty a write-back file");
  }
  base_size_ = valid_base_ = size_ = base_size;
  checked_ = 0;
  released_ = 0;
  local_.clear();
  staged_.clear();
  unstaged_.clear();
  versions_.clear();
  dirty_ = false;
}

std::uint64_t WriteBack::local_bytes() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0)
    return 0;
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

std::uint64_t WriteBack::memory_bytes() const {
  // A std::set or std::map node: its value, the links and colour, and malloc's header, rounded up
  // to malloc's 16-byte steps.
  const auto node = [](std::size_t value) -> std::uint64_t {
    return (value + 4 * sizeof(void*) + sizeof(std::size_t) + 15) / 16 * 16;
  };
  return (local_.size() + unstaged_.size()) * node(sizeof(std::uint64_t)) +
         staged_.size() * node(sizeof(std::pair<const std::uint64_t, SegmentRef>)) +
         versions_.size() * node(sizeof(std::pair<const std::uint64_t, std::uint64_t>));
}

std::uint64_t WriteBack::footprint() const {
  // Every staged segment is local, every local one is below size(), and all but the last are
  // full: no walk over the segments (this runs at every write).
  const std::uint64_t held = local_.size() - (keep_staged_ ? released_ : staged_.size());
  std::uint64_t bytes = held * segment_bytes_;
  if (held > 0 && size_ > 0) {
    const std::uint64_t last = (size_ - 1) / segment_bytes_;
    if (holds(last))
      bytes -= segment_bytes_ - segment_length(last);
  }
  return bytes;
}

std::uint64_t WriteBack::growth(std::uint64_t offset, std::uint64_t length) const {
  if (length == 0)
    return 0;
  const std::uint64_t end = offset + length;
  const std::uint64_t new_size = std::max(size_, end);
  const auto counted = [&](std::uint64_t s, std::uint64_t size) -> std::uint64_t {
    const std::uint64_t start = segment_start(s);
    return size > start ? std::min<std::uint64_t>(segment_bytes_, size - start) : 0;
  };
  std::uint64_t bytes = 0;
  const std::uint64_t first = offset / segment_bytes_;
  const std::uint64_t last = (end - 1) / segment_bytes_;
  for (std::uint64_t s = first; s <= last; ++s)
    bytes += counted(s, new_size) - (holds(s) ? counted(s, size_) : 0);
  // The old last segment grows with the file even where the write does not touch it.
  if (size_ > 0 && new_size > size_) {
    const std::uint64_t tail = (size_ - 1) / segment_bytes_;
    if ((tail < first || tail > last) && holds(tail))
      bytes += counted(tail, new_size) - counted(tail, size_);
  }
  return bytes;
}

WriteBack::State WriteBack::state() const {
  return State{base_size_, valid_base_, size_, local_, staged_, dirty_};
}

std::string WriteBack::freeze() {
  if (!frozen_) {
    if (::fdatasync(fd_) != 0)
      fail("cannot sync a write-back file");
    frozen_ = true;
  }
  return name_;
}

std::string WriteBack::freeze_unsynced() {
  frozen_ = true;
  return name_;
}

std::vector<WriteBack::Span> WriteBack::plan(std::uint64_t offset, std::uint64_t length) const {
  std::vector<Span> out;
  const std::uint64_t end = offset + std::min(length, size_ > offset ? size_ - offset : 0);
  for (std::uint64_t at = offset; at < end;) {
    const std::uint64_t s = at / segment_bytes_;
    const std::uint64_t segment_end = std::min(end, segment_start(s + 1));
    Span span{at, 0, Source::zero};
    std::uint64_t stop = segment_end;
    if (staged_.contains(s)) {
      span.source = Source::staged;
    } else if (is_local(s)) {
      span.source = Source::local;
    } else if (at < valid_base_) {
      span.source = Source::base;
      stop = std::min(segment_end, valid_base_);
    }
    span.length = static_cast<std::size_t>(stop - at);
    out.push_back(span);
    at = stop;
  }
  return out;
}

void WriteBack::read_local(std::uint64_t offset, MutableByteView out) const {
  std::size_t done = 0;
  while (fd_ >= 0 && done < out.size()) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      fail("cannot read a write-back file");
    if (n == 0)
      break;
    done += static_cast<std::size_t>(n);
  }
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(done), out.end(), std::uint8_t{0});
}

std::vector<std::uint64_t> WriteBack::base_needed(std::uint64_t offset, std::size_t length) const {
  std::vector<std::uint64_t> out;
  if (length == 0)
    return out;
  const std::uint64_t end = offset + length;
  for (std::uint64_t s = offset / segment_bytes_; segment_start(s) < end; ++s) {
    const std::uint64_t start = segment_start(s);
    if (staged_.contains(s)) {
      // Staged bytes are the whole segment; the write must cover it all.
      if (!(offset <= start && end >= start + staged_.at(s).length))
        out.push_back(s);
      continue;
    }
    if (is_local(s) || start >= valid_base_)
      continue;
    // The segment's base bytes are [start, base_end); the write must cover them all.
    const std::uint64_t base_end = std::min(segment_start(s + 1), valid_base_);
    if (!(offset <= start && end >= base_end))
      out.push_back(s);
  }
  return out;
}

std::vector<std::uint64_t> WriteBack::truncate_needs(std::uint64_t size) const {
  if (size >= size_ || size % segment_bytes_ == 0)
    return {};
  const std::uint64_t s = size / segment_bytes_;
  return staged_.contains(s) ? std::vector<std::uint64_t>{s} : std::vector<std::uint64_t>{};
}

void WriteBack::fill(std::uint64_t s, ByteView bytes) {
  if (is_local(s) && !staged_.contains(s))
    return;
  ++changes_;
  thaw();
  const auto staged = staged_.find(s);
  const std::uint64_t start = segment_start(s);
  // The bytes that are this segment's now: the staged segment whole, or the valid base part.
  const std::uint64_t valid_end =
      staged != staged_.end() ? start + staged->second.length
                              : std::max(start, std::min(segment_start(s + 1), valid_base_));
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(valid_end - start, bytes.size()));
  for (std::size_t done = 0; done < n;) {
    const ssize_t w =
        ::pwrite(fd_, bytes.data() + done, n - done, static_cast<off_t>(start + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      fail("cannot write a write-back file");
    done += static_cast<std::size_t>(w);
  }
  if (staged != staged_.end())
    drop_staged(s);
  local_.insert(s);
  unstaged_.insert(s);
  touch(s);
}

void WriteBack::write(std::uint64_t offset, ByteView data) {
  if (data.empty())
    return;
  ++changes_;
  thaw();
  const std::uint64_t end = offset + data.size();
  for (std::uint64_t s = offset / segment_bytes_; segment_start(s) < end; ++s) {
    // A staged segment written only in part must have been filled first (base_needed()).
    assert(!staged_.contains(s) ||
           (offset <= segment_start(s) && end >= segment_start(s) + staged_.at(s).length));
    local_.insert(s);
    drop_staged(s);  // wholly overwritten (base_needed() filled a partly written one)
    unstaged_.insert(s);
    touch(s);
  }
  for (std::size_t done = 0; done < data.size();) {
    const ssize_t w =
        ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      fail("cannot write a write-back file");
    done += static_cast<std::size_t>(w);
  }
  size_ = std::max(size_, end);
  dirty_ = true;
}

void WriteBack::truncate(std::uint64_t size) {
  if (size == size_)
    return;
  ++changes_;
  thaw();
  if (size < size_) {
    valid_base_ = std::min(valid_base_, size);
    const std::uint64_t first_gone = (size + segment_bytes_ - 1) / segment_bytes_;
    for (auto it = local_.lower_bound(first_gone); it != local_.end();) {
      drop_staged(*it);
      versions_.erase(*it);
      it = local_.erase(it);
    }
    unstaged_.erase(unstaged_.lower_bound(first_gone), unstaged_.end());
    checked_ = std::min(checked_, size);  // what comes back past size was not checked
    // A staged segment the new end cuts must have been filled first (truncate_needs()).
    assert(size % segment_bytes_ == 0 || !staged_.contains(size / segment_bytes_));
    if (size % segment_bytes_ != 0 && is_local(size / segment_bytes_)) {
      // The segment the new end cuts: its tail goes (truncate_needs() unstaged it first).
      touch(size / segment_bytes_);
    }
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
      fail("cannot truncate a write-back file");
  }
  size_ = size;
  dirty_ = true;
}

std::uint64_t WriteBack::segment_count() const {
  return (size_ + segment_bytes_ - 1) / segment_bytes_;
}

std::size_t WriteBack::segment_length(std::uint64_t s) const {
  return static_cast<std::size_t>(
      std::min<std::uint64_t>(segment_bytes_, size_ - segment_start(s)));
}

std::vector<std::uint64_t> WriteBack::stageable(std::uint64_t from, std::uint64_t below,
                                                std::size_t max) const {
  std::vector<std::uint64_t> out;
  for (auto it = unstaged_.lower_bound(from);
       it != unstaged_.end() && *it < below && out.size() < max; ++it) {
    if (segment_start(*it + 1) <= size_)
      out.push_back(*it);
  }
  return out;
}

std::uint64_t WriteBack::version(std::uint64_t s) const {
  const auto it = versions_.find(s);
  return it == versions_.end() ? 0 : it->second;
}

bool WriteBack::stage(std::uint64_t s, std::uint64_t version, const SegmentRef& ref) {
  if (!is_local(s) || staged_.contains(s) || this->version(s) != version ||
      ref.length != segment_length(s)) {
    return false;
  }
  staged_[s] = ref;
  unstaged_.erase(s);
  if (!holds(s)) {
    released_ += keep_staged_ ? 1 : 0;
    release(s, s);
  }
  return true;
}

void WriteBack::release_checked(std::uint64_t end) {
  if (end <= checked_)
    return;
  const std::uint64_t from = checked_ / segment_bytes_;
  checked_ = end;
  if (!keep_staged_)
    return;  // released as they were staged
  // The staged segments newly below checked_; release() skips the blocks still needed between.
  const auto first = staged_.lower_bound(from);
  auto last = first;
  for (auto it = first; it != staged_.end() && checked(it->first); ++it) {
    ++released_;
    last = it;
  }
  if (first != staged_.end() && checked(first->first))
    release(first->first, last->first);
}

void WriteBack::drop_staged(std::uint64_t s) {
  if (staged_.erase(s) != 0 && keep_staged_ && checked(s))
    --released_;
}

void WriteBack::release(std::uint64_t first, std::uint64_t last) const {
  // Where holes cannot be punched the bytes just stay, and a frozen file keeps them for the
  // journal.
  if (frozen_ || fd_ < 0)
    return;
  // Whole blocks only, and only those holding no bytes still needed: the kernel frees a block's
  // pages together, and the next writes reuse them. Pages freed a segment at a time go to the
  // host on such a VM, and each later write pays to bring fresh ones back.
  const std::uint64_t begin = segment_start(first) / kReleaseBlock * kReleaseBlock;
  const std::uint64_t end = segment_start(last) + segment_length(last);
  for (std::uint64_t block = begin; block < end; block += kReleaseBlock) {
    const std::uint64_t block_end = block + kReleaseBlock;
    bool needed = false;
    for (std::uint64_t s = block / segment_bytes_; segment_start(s) < block_end && !needed; ++s)
      needed = holds(s);
    if (!needed)
      ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(block),
                  static_cast<off_t>(kReleaseBlock));
  }
}

const SegmentRef* WriteBack::staged(std::uint64_t s) const {
  const auto it = staged_.find(s);
  return it == staged_.end() ? nullptr : &it->second;
}

std::uint64_t WriteBack::unstaged_bytes() const {
  return static_cast<std::uint64_t>(unstaged_.size()) * segment_bytes_;
}

bool WriteBack::reusable(std::uint64_t s) const {
  if (is_local(s))
    return false;
  const std::uint64_t base_segments = (base_size_ + segment_bytes_ - 1) / segment_bytes_;
  if (s >= base_segments)
    return false;
  if (segment_start(s + 1) <= valid_base_)
    return true;
  // The base's short last segment, untouched, in a file of the same size.
  return s + 1 == base_segments && valid_base_ == base_size_ && size_ == base_size_;
}

bool WriteBack::build_needs_base(std::uint64_t s) const {
  return !is_local(s) && segment_start(s) < valid_base_;
}

void WriteBack::build(std::uint64_t s, ByteView base_segment, Bytes& out) const {
  const std::uint64_t start = segment_start(s);
  // Every byte is written below, so a buffer used again is not cleared first.
  out.resize(segment_length(s));
  if (is_local(s)) {
    read_local(start, out);
    return;
  }
  std::size_t n = 0;
  if (start < valid_base_) {
    n = static_cast<std::size_t>(std::min<std::uint64_t>(
        std::min<std::uint64_t>(valid_base_ - start, out.size()), base_segment.size()));
    std::copy_n(base_segment.begin(), n, out.begin());
  }
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(n), out.end(), std::uint8_t{0});
}

}  // namespace splitfs::fs
