// The Sources a scan reads: local files, bytes in memory, segments produced on demand.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <splitfs/errors.hpp>

#include "scan/scan.hpp"

namespace splitfs::scan {

namespace {

std::uint64_t size_of(int fd, const std::filesystem::path& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw LocalIoError("cannot read " + path.string() + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    throw LocalIoError(path.string() + " is not a regular file");
  return static_cast<std::uint64_t>(st.st_size);
}

}  // namespace

FileSource::FileSource(const std::filesystem::path& path)
    : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), owned_(true), path_(path) {
  if (fd_ < 0)
    throw LocalIoError("cannot read " + path.string() + ": " + std::strerror(errno));
  try {
    size_ = size_of(fd_, path_);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

FileSource::FileSource(int fd, std::filesystem::path path_for_messages)
    : fd_(fd), owned_(false), path_(std::move(path_for_messages)) {
  size_ = size_of(fd_, path_);
}

FileSource::~FileSource() {
  if (owned_ && fd_ >= 0)
    ::close(fd_);
}

std::size_t FileSource::read_at(std::uint64_t offset, MutableByteView out) {
  std::size_t done = 0;
  while (done < out.size() && offset + done < size_) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw LocalIoError("cannot read " + path_.string() + ": " + std::strerror(errno));
    if (n == 0)
      break;  // it shrank: what is there is what is scanned
    done += static_cast<std::size_t>(n);
  }
  return done;
}

std::size_t MemorySource::read_at(std::uint64_t offset, MutableByteView out) {
  if (offset >= bytes_.size())
    return 0;
  const std::size_t n =
      std::min<std::size_t>(out.size(), bytes_.size() - static_cast<std::size_t>(offset));
  std::memcpy(out.data(), bytes_.data() + offset, n);
  return n;
}

GrowingFileSource::GrowingFileSource(int fd, std::uint64_t size,
                                     std::filesystem::path path_for_messages)
    : fd_(fd), size_(size), path_(std::move(path_for_messages)) {}

void GrowingFileSource::written(std::uint64_t bytes) {
  {
    std::lock_guard lock(mutex_);
    written_ = std::max(written_, std::min(bytes, size_));
  }
  grown_.notify_all();
}

void GrowingFileSource::abandon() {
  {
    std::lock_guard lock(mutex_);
    abandoned_ = true;
  }
  grown_.notify_all();
}

std::size_t GrowingFileSource::read_at(std::uint64_t offset, MutableByteView out) {
  if (offset >= size_)
    return 0;
  const std::uint64_t end = offset + std::min<std::uint64_t>(out.size(), size_ - offset);
  {
    std::unique_lock lock(mutex_);
    grown_.wait(lock, [&] { return written_ >= end || abandoned_; });
    if (written_ < end)
      throw LocalIoError("the writing of " + path_.string() + " stopped before its end");
  }
  std::size_t done = 0;
  const std::size_t want = static_cast<std::size_t>(end - offset);
  while (done < want) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, want - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw LocalIoError("cannot read " + path_.string() + ": " +
                         (n < 0 ? std::strerror(errno) : "it shrank"));
    done += static_cast<std::size_t>(n);
  }
  return done;
}

SegmentSource::SegmentSource(std::uint64_t size, std::uint32_t segment_bytes, Loader load,
                             bool concurrent_loads)
    : size_(size),
      segment_bytes_(segment_bytes),
      load_(std::move(load)),
      concurrent_loads_(concurrent_loads) {
  if (segment_bytes_ == 0)
    throw Error("a segment source needs a segment size");
}

SegmentSource::Slots& SegmentSource::slots_of_this_thread() {
  std::lock_guard lock(mutex_);
  return slots_[std::this_thread::get_id()];  // map nodes stay put as others are added
}

const Bytes& SegmentSource::segment(Slots& slots, std::uint64_t s) {
  for (auto& slot : slots.slot) {
    if (slot.segment == s)
      return slot.bytes;
  }
  Slot& slot = slots.slot[slots.next];
  slots.next = (slots.next + 1) % slots.slot.size();
  slot.segment = ~std::uint64_t{0};
  load_(s, slot.bytes);
  const std::uint64_t start = s * segment_bytes_;
  const std::uint64_t expected = std::min<std::uint64_t>(segment_bytes_, size_ - start);
  if (slot.bytes.size() != expected)
    throw Error("segment " + std::to_string(s) + " has " + std::to_string(slot.bytes.size()) +
                " bytes, not " + std::to_string(expected));
  slot.segment = s;
  return slot.bytes;
}

std::size_t SegmentSource::read_at(std::uint64_t offset, MutableByteView out) {
  Slots& slots = slots_of_this_thread();
  std::size_t done = 0;
  while (done < out.size() && offset + done < size_) {
    const std::uint64_t at = offset + done;
    const std::uint64_t s = at / segment_bytes_;
    const Bytes& bytes = segment(slots, s);
    const std::size_t within = static_cast<std::size_t>(at - s * segment_bytes_);
    const std::size_t n = std::min(out.size() - done, bytes.size() - within);
    std::memcpy(out.data() + done, bytes.data() + within, n);
    done += n;
  }
  return done;
}

}  // namespace splitfs::scan
