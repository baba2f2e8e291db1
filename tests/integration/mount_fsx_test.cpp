// A random-operation exerciser in the spirit of fsx: writes, truncations, reads, mmap reads and
// writes, O_DIRECT reads and writes, fsync, close/reopen and remounts on a file in the mount,
// mirrored on a local file; after every read and at every reopen the two must agree byte for
// byte. The seed is printed on failure; SPLITFS_FSX_SEED replays it and SPLITFS_FSX_OPS sets the
// length (mount-scripts/fsx-long.sh runs 100,000 operations).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/integration/mount_fixture.hpp"

using splitfs::testing::Mount;

namespace {

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  return text && *text ? std::strtoull(text, nullptr, 10) : fallback;
}

// The two files and their descriptors.
struct Pair {
  std::string mount_path;
  std::string local_path;
  int fd = -1;      // the mount's file
  int direct = -1;  // the mount's file, O_DIRECT
  int local = -1;

  void open() {
    fd = ::open(mount_path.c_str(), O_RDWR | O_CREAT, 0644);
    direct = ::open(mount_path.c_str(), O_RDWR | O_DIRECT);
    local = ::open(local_path.c_str(), O_RDWR | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(direct >= 0);
    REQUIRE(local >= 0);
  }
  void close() {
    CHECK(::close(fd) == 0);
    CHECK(::close(direct) == 0);
    CHECK(::close(local) == 0);
    fd = direct = local = -1;
  }
  off_t size() const {
    struct stat st {};
    REQUIRE(::fstat(local, &st) == 0);
    return st.st_size;
  }
};

std::string read_all(int fd, off_t size) {
  std::string out(static_cast<std::size_t>(size), '\0');
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    REQUIRE(n > 0);
    done += static_cast<std::size_t>(n);
  }
  return out;
}

// Reports the first differing offset rather than two huge strings.
void same_bytes(const std::string& got, const std::string& want, const char* what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  const auto diff = std::mismatch(got.begin(), got.end(), want.begin());
  INFO("first difference at offset " << (diff.first - got.begin()));
  REQUIRE(diff.first == got.end());
}

}  // namespace

TEST_CASE("mount: fsx random operations against a local file", "[mount][fsx][long]") {
  const std::uint64_t seed = env_number("SPLITFS_FSX_SEED", std::random_device{}());
  const std::uint64_t ops = env_number("SPLITFS_FSX_OPS", 3000);
  const off_t max_size = static_cast<off_t>(env_number("SPLITFS_FSX_MAX_SIZE", 3u << 20));
  INFO("seed " << seed << " (SPLITFS_FSX_SEED=" << seed << " to replay)");
  std::mt19937_64 rng(seed);
  const auto below = [&](std::uint64_t n) { return n == 0 ? 0 : rng() % n; };

  Mount m;
  Pair p{(m / "fsx.bin").string(), (m.dir.path() / "reference.bin").string()};
  p.open();
  std::vector<char> buf;
  const auto random_span = [&](off_t limit, std::size_t max_len) {
    const off_t offset = static_cast<off_t>(below(static_cast<std::uint64_t>(limit)));
    const std::size_t len = 1 + below(max_len);
    return std::pair{offset, len};
  };
  std::uint64_t counts[12] = {};
  for (std::uint64_t op = 0; op < ops; ++op) {
    INFO("operation " << op);
    const off_t size = p.size();
    const int kind = static_cast<int>(below(100));
    if (kind < 30) {  // write, sometimes far past the end
      const auto [offset, len] = random_span(max_size, below(8) == 0 ? 600000 : 40000);
      buf.resize(len);
      for (auto& c : buf)
        c = static_cast<char>(rng());
      REQUIRE(::pwrite(p.fd, buf.data(), len, offset) == static_cast<ssize_t>(len));
      REQUIRE(::pwrite(p.local, buf.data(), len, offset) == static_cast<ssize_t>(len));
      ++counts[0];
    } else if (kind < 40) {  // truncate up or down
      const off_t to = static_cast<off_t>(below(static_cast<std::uint64_t>(max_size)));
      REQUIRE(::ftruncate(p.fd, to) == 0);
      REQUIRE(::ftruncate(p.local, to) == 0);
      ++counts[1];
    } else if (kind < 60) {  // read
      if (size == 0)
        continue;
      const auto [offset, len] = random_span(size + 1000, 100000);
      std::string got(len, '\0');
      std::string want(len, '\0');
      const ssize_t g = ::pread(p.fd, got.data(), len, offset);
      const ssize_t w = ::pread(p.local, want.data(), len, offset);
      REQUIRE(g == w);
      if (w > 0)
        same_bytes(got.substr(0, static_cast<std::size_t>(w)),
                   want.substr(0, static_cast<std::size_t>(w)), "read");
      ++counts[2];
    } else if (kind < 68) {  // mmap read
      if (size == 0)
        continue;
      const auto [offset, len] = random_span(size, 100000);
      const std::size_t n = std::min<std::size_t>(len, static_cast<std::size_t>(size - offset));
      const off_t page = offset & ~static_cast<off_t>(4095);
      const std::size_t map_len = n + static_cast<std::size_t>(offset - page);
      void* map = ::mmap(nullptr, map_len, PROT_READ, MAP_SHARED, p.fd, page);
      REQUIRE(map != MAP_FAILED);
      std::string want(n, '\0');
      REQUIRE(::pread(p.local, want.data(), n, offset) == static_cast<ssize_t>(n));
      same_bytes(std::string(static_cast<const char*>(map) + (offset - page), n), want,
                 "mmap read");
      ::munmap(map, map_len);
      ++counts[3];
    } else if (kind < 76) {  // mmap write within the file
      if (size == 0)
        continue;
      const auto [offset, len] = random_span(size, 50000);
      const std::size_t n = std::min<std::size_t>(len, static_cast<std::size_t>(size - offset));
      const off_t page = offset & ~static_cast<off_t>(4095);
      const std::size_t map_len = n + static_cast<std::size_t>(offset - page);
      void* map = ::mmap(nullptr, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd, page);
      REQUIRE(map != MAP_FAILED);
      buf.resize(n);
      for (auto& c : buf)
        c = static_cast<char>(rng());
      std::memcpy(static_cast<char*>(map) + (offset - page), buf.data(), n);
      REQUIRE(::msync(map, map_len, MS_SYNC) == 0);
      ::munmap(map, map_len);
      REQUIRE(::pwrite(p.local, buf.data(), n, offset) == static_cast<ssize_t>(n));
      ++counts[4];
    } else if (kind < 82) {  // O_DIRECT read
      if (size == 0)
        continue;
      const auto [offset, len] = random_span(size, 200000);
      std::string got(len, '\0');
      std::string want(len, '\0');
      const ssize_t g = ::pread(p.direct, got.data(), len, offset);
      const ssize_t w = ::pread(p.local, want.data(), len, offset);
      REQUIRE(g == w);
      if (w > 0)
        same_bytes(got.substr(0, static_cast<std::size_t>(w)),
                   want.substr(0, static_cast<std::size_t>(w)), "O_DIRECT read");
      ++counts[5];
    } else if (kind < 88) {  // O_DIRECT write
      const auto [offset, len] = random_span(max_size, 100000);
      buf.resize(len);
      for (auto& c : buf)
        c = static_cast<char>(rng());
      REQUIRE(::pwrite(p.direct, buf.data(), len, offset) == static_cast<ssize_t>(len));
      REQUIRE(::pwrite(p.local, buf.data(), len, offset) == static_cast<ssize_t>(len));
      ++counts[6];
    } else if (kind < 93) {  // fsync: commits to the servers
      REQUIRE(::fsync(p.fd) == 0);
      ++counts[7];
    } else if (kind < 99) {  // close and reopen: committed, read back whole
      p.close();
      p.open();
      same_bytes(read_all(p.fd, p.size()), read_all(p.local, p.size()), "after reopen");
      ++counts[8];
    } else {  // remount
      p.close();
      m.remount();
      p.open();
      same_bytes(read_all(p.fd, p.size()), read_all(p.local, p.size()), "after remount");
      ++counts[9];
    }
    struct stat st {};
    REQUIRE(::fstat(p.fd, &st) == 0);
    REQUIRE(st.st_size == p.size());
  }
  p.close();
  m.remount();
  p.open();
  same_bytes(read_all(p.fd, p.size()), read_all(p.local, p.size()), "at the end");
  p.close();
  WARN("fsx seed " << seed << ": " << ops << " operations: " << counts[0] << " writes, "
                   << counts[1] << " truncates, " << counts[2] << " reads, " << counts[3]
                   << " mmap reads, " << counts[4] << " mmap writes, " << counts[5]
                   << " O_DIRECT reads, " << counts[6] << " O_DIRECT writes, " << counts[7]
                   << " fsyncs, " << counts[8] << " reopens, " << counts[9] << " remounts");
}
