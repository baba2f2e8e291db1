#include "store/pack.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "store/crc32c.hpp"

namespace splitfs::store::pack {

namespace {

constexpr std::array<std::uint8_t, 4> kRecordMagic = {'S', 'F', 'R', '1'};
constexpr std::size_t kIdOffset = 4;
constexpr std::size_t kSizeOffset = kIdOffset + 32;
constexpr std::size_t kCrcOffset = kSizeOffset + 4;
static_assert(kCrcOffset + 4 == kRecordHeaderSize);
constexpr std::string_view kSuffix = ".pack";
constexpr std::size_t kDigits = 8;

void store_le32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::uint32_t load_le32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
         std::uint32_t{p[3]} << 24;
}

// The CRC covers id and size as well as the blob, so a flipped bit anywhere in a record shows.
std::uint32_t record_crc(const RecordHeader& header, ByteView blob) {
  std::uint32_t crc =
      crc32c(ByteView(header.data() + kIdOffset, kCrcOffset - kIdOffset));  // id | size
  return crc32c_extend(crc, blob);
}

std::error_code last_errno() {
  return {errno, std::system_category()};
}

// Drops the bytes `done` from the front of `iov`; returns the index of the first unfinished entry.
std::size_t advance(std::span<iovec> iov, std::size_t first, std::size_t done) {
  while (first < iov.size() && done >= iov[first].iov_len) {
    done -= iov[first].iov_len;
    ++first;
  }
  if (first < iov.size() && done > 0) {
    iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + done;
    iov[first].iov_len -= done;
  }
  return first;
}

std::size_t skip_empty(std::span<iovec> iov, std::size_t first) {
  while (first < iov.size() && iov[first].iov_len == 0)
    ++first;
  return first;
}

using VectorIo = ssize_t (*)(int, const iovec*, int, off_t, int);

// RWF_DONTCACHE, which the C library's headers may not name yet.
constexpr int kDontCache = 0x80;
#ifdef RWF_DONTCACHE
static_assert(RWF_DONTCACHE == kDontCache);
#endif

// Moves all of `iov` at `offset` with pwritev2 or preadv2, resuming after partial transfers and
// EINTR. Stops early with `ended` set when a call moves nothing (end of file, for a read).
std::error_code transfer_all(VectorIo io, int fd, std::span<iovec> iov, std::uint64_t offset,
                             Caching caching, bool& ended) {
  ended = false;
  int flags = caching == Caching::drop_behind ? kDontCache : 0;
  std::size_t first = skip_empty(iov, 0);
  while (first < iov.size()) {
    int count = static_cast<int>(std::min<std::size_t>(iov.size() - first, IOV_MAX));
    ssize_t n = io(fd, &iov[first], count, static_cast<off_t>(offset), flags);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      // The kernel or the filesystem has no uncached I/O: it refused before moving a byte.
      if (errno == EOPNOTSUPP && flags != 0) {
        flags = 0;
        continue;
      }
      return last_errno();
    }
    if (n == 0) {
      ended = true;
      return {};
    }
    offset += static_cast<std::uint64_t>(n);
    first = skip_empty(iov, advance(iov, first, static_cast<std::size_t>(n)));
  }
  return {};
}

}  // namespace

RecordHeader make_header(const Id& id, ByteView blob) {
  RecordHeader h{};
  std::copy(kRecordMagic.begin(), kRecordMagic.end(), h.begin());
  std::copy(id.begin(), id.end(), h.begin() + kIdOffset);
  store_le32(h.data() + kSizeOffset, static_cast<std::uint32_t>(blob.size()));
  store_le32(h.data() + kCrcOffset, record_crc(h, blob));
  return h;
}

bool check_record(const RecordHeader& header, const Id& id, ByteView blob) {
  if (!std::equal(kRecordMagic.begin(), kRecordMagic.end(), header.begin()))
    return false;
  if (!std::equal(id.begin(), id.end(), header.begin() + kIdOffset))
    return false;
  if (load_le32(header.data() + kSizeOffset) != blob.size())
    return false;
  return load_le32(header.data() + kCrcOffset) == record_crc(header, blob);
}

std::string file_name(std::uint32_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "%08u.pack", static_cast<unsigned>(number));
  return name;
}

std::optional<std::uint32_t> parse_file_name(std::string_view name) {
  if (name.size() != kDigits + kSuffix.size() || !name.ends_with(kSuffix))
    return std::nullopt;
  std::uint32_t number = 0;
  for (std::size_t i = 0; i < kDigits; ++i) {
    if (name[i] < '0' || name[i] > '9')
      return std::nullopt;
    number = number * 10 + static_cast<std::uint32_t>(name[i] - '0');
  }
  if (number == 0)
    return std::nullopt;
  return number;
}

std::error_code open_file(const std::filesystem::path& path, int flags, unsigned mode, Fd& out) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags | O_CLOEXEC, static_cast<mode_t>(mode));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0)
    return last_errno();
  out = Fd(fd);
  return {};
}

std::error_code write_all(int fd, std::span<iovec> iov, std::uint64_t offset, Caching caching) {
  bool ended = false;
  if (auto ec = transfer_all(::pwritev2, fd, iov, offset, caching, ended))
    return ec;
  return ended ? std::make_error_code(std::errc::io_error) : std::error_code{};
}

std::error_code read_all(int fd, std::span<iovec> iov, std::uint64_t offset, bool& short_read) {
  return transfer_all(::preadv2, fd, iov, offset, Caching::keep, short_read);
}

std::error_code sync_data(int fd) {
  int rc;
  do {
    rc = ::fdatasync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? std::error_code{} : last_errno();
}

std::error_code sync_dir(const std::filesystem::path& dir) {
  Fd fd;
  if (auto ec = open_file(dir, O_RDONLY | O_DIRECTORY, 0, fd))
    return ec;
  int rc;
  do {
    rc = ::fsync(fd.get());
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? std::error_code{} : last_errno();
}

std::error_code make_private_dir(const std::filesystem::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0)
    return {};
  if (errno != EEXIST)
    return last_errno();
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    return last_errno();
  if (!S_ISDIR(st.st_mode))
    return std::make_error_code(std::errc::not_a_directory);
  return {};
}

}  // namespace splitfs::store::pack
