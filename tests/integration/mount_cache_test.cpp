// The mount's read cache, its upload economy and its unmount: a second read is served from the
// cache without network traffic; a small cache stays within its budget while a file many times
// its size is read; a small edit to a 64 MiB file uploads a small fraction of it; unmounting with
// changes still pending commits them, and no mount is left behind.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include "core/manifest.hpp"
#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"

using splitfs::testing::Mount;
using splitfs::testing::read_file;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;

namespace {

void write_random(const std::filesystem::path& path, std::size_t size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string data(size, '\0');
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(data.data() + i, &v, 8);
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  for (std::size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, data.data() + done, std::min<std::size_t>(1 << 20, size - done));
    REQUIRE(n > 0);
    done += static_cast<std::size_t>(n);
  }
  REQUIRE(::close(fd) == 0);
}

// Reads a whole file with O_DIRECT (past the kernel's page cache, so every byte is asked of the
// mount); returns a checksum.
std::uint64_t read_direct(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  REQUIRE(fd >= 0);
  std::string buf(1 << 20, '\0');
  std::uint64_t sum = 0;
  for (ssize_t n; (n = ::read(fd, buf.data(), buf.size())) > 0;) {
    for (ssize_t i = 0; i < n; ++i)
      sum = sum * 131 + static_cast<unsigned char>(buf[static_cast<std::size_t>(i)]);
  }
  ::close(fd);
  return sum;
}

std::uint64_t rss_kib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field, 0) == 0)
      return std::stoull(line.substr(std::strlen(field) + 1));
  }
  return 0;
}

}  // namespace

TEST_CASE("mount: a second read is served from the cache without network traffic",
          "[mount][cache]") {
  Mount m;
  write_random(m / "f", 6 << 20, 1);
  m.remount();  // an empty cache
  const auto before = m.stats();
  const std::uint64_t first = read_direct(m / "f");
  const auto after_first = m.stats();
  CHECK(after_first.at("cache_misses") > before.at("cache_misses"));
  CHECK(after_first.at("bytes_received") - before.at("bytes_received") >= (6u << 20));
  const std::uint64_t second = read_direct(m / "f");
  const auto after_second = m.stats();
  CHECK(second == first);
  CHECK(after_second.at("cache_hits") - after_first.at("cache_hits") >=
        24);  // 6 MiB / 256 KiB at most
  CHECK(after_second.at("cache_misses") == after_first.at("cache_misses"));
  CHECK(after_second.at("bytes_received") == after_first.at("bytes_received"));
  CHECK(after_first.at("readahead_segments") > 0);
}

TEST_CASE("mount: a sequential cold read reaches the mount in requests of max_read",
          "[mount][cache]") {
  Mount m;
  write_random(m / "f", 16 << 20, 3);
  m.remount();
  struct stat st {};
  REQUIRE(::stat(m.mountpoint.c_str(), &st) == 0);
  std::ifstream knob("/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                     std::to_string(minor(st.st_dev)) + "/read_ahead_kb");
  std::size_t kib = 0;
  knob >> kib;
  CHECK(kib == 1024);
  const auto before = m.stats();
  std::ifstream in(m / "f", std::ios::binary);
  std::string buf(128 << 10, '\0');  // cat's reads
  std::uint64_t total = 0;
  while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
    total += static_cast<std::uint64_t>(in.gcount());
  CHECK(total == (16u << 20));
  const auto after = m.stats();
  // 16 at 1 MiB each, and the first read-ahead's ramp; at the kernel's default 128 KiB of
  // read-ahead the same read arrives as 64 requests or more.
  CHECK(after.at("reads") - before.at("reads") <= 24);
}

TEST_CASE("mount: a small cache stays within its budget", "[mount][cache]") {
  Mount m("cache_size=2M");
  write_random(m / "big", 48 << 20, 2);
  m.remount();
  const pid_t pid = m.pid();
  const std::uint64_t rss_before = rss_kib(pid, "VmRSS:");
  std::uint64_t sum = 0;
  for (int pass = 0; pass < 3; ++pass) {
    const std::uint64_t s = read_direct(m / "big");
    if (pass > 0)
      CHECK(s == sum);
    sum = s;
    auto st = m.stats();
    // A read-ahead still in flight pins what it fetches until it hands it over: only once the
    // mount is idle must nothing be pinned.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (st.at("cache_pinned_bytes") != 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      st = m.stats();
    }
    CHECK(st.at("cache_capacity") == (2u << 20));
    CHECK(st.at("cache_bytes") <= st.at("cache_capacity"));
    CHECK(st.at("cache_pinned_bytes") == 0);
  }
  const auto st = m.stats();
  CHECK(st.at("cache_evictions") > 0);
  // Nothing fits, so every pass downloads.
  CHECK(st.at("bytes_received") >= 3 * (std::uint64_t{48} << 20));
  const std::uint64_t peak = rss_kib(pid, "VmHWM:");
  INFO("RSS before " << rss_before << " KiB, peak " << peak << " KiB");
#ifndef __SANITIZE_ADDRESS__  // AddressSanitizer keeps freed memory in quarantine on purpose
  CHECK(peak < rss_before + (std::uint64_t{40} << 10));  // far below the 144 MiB read
#endif
}

TEST_CASE("mount: a remount with the same cache_dir reads from the disk without the servers",
          "[mount][cache]") {
  const TempDir cache_dir("splitfs-disk-cache");
  {
    Mount m("allow_other,cache_dir=" + cache_dir.path().string() + ",cache_dir_size=64M");
    write_random(m / "f", 6 << 20, 7);
    m.remount();  // an empty memory cache: this read fills the disk tier
    const std::uint64_t first = read_direct(m / "f");
    const auto filled = m.stats();
    CHECK(filled.at("disk_cache_misses") > 0);
    CHECK(filled.at("disk_cache_bytes") >= (6u << 20));
    CHECK(filled.at("disk_cache_capacity") == (64u << 20));
    CHECK(filled.at("bytes_received") >= (6u << 20));
    m.remount();  // a new process, the same cache_dir
    const auto before = m.stats();
    const std::uint64_t second = read_direct(m / "f");
    const auto after = m.stats();
    CHECK(second == first);
    CHECK(after.at("bytes_received") == before.at("bytes_received"));  // no segment fetched
    CHECK(after.at("disk_cache_hits") >= 6);
    CHECK(after.at("disk_cache_misses") == 0);
    // The folder holds no plaintext: no file there contains the file's first bytes.
    std::ifstream in(m / "f", std::ios::binary);
    std::string head(64, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    for (const auto& entry : std::filesystem::recursive_directory_iterator(cache_dir.path())) {
      if (!entry.is_regular_file())
        continue;
      CHECK(read_file(entry.path()).find(head) == std::string::npos);
    }
  }
}

TEST_CASE("mount: a small edit to a 64 MiB file uploads a small fraction of it", "[mount][cache]") {
  Mount m;
  const std::size_t size = 64u << 20;
  write_random(m / "big", size, 3);
  const auto before = m.stats();
  {
    const int fd = ::open((m / "big").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "a small edit", 12, 30 << 20) == 12);
    REQUIRE(::close(fd) == 0);
  }
  const auto after = m.stats();
  const std::uint64_t sent = after.at("bytes_sent") - before.at("bytes_sent");
  INFO(sent << " bytes sent for a 12-byte edit of a " << size << "-byte file");
  CHECK(sent > 0);
  CHECK(sent < size / 100);
  // Storing the same bytes again under another name sends (almost) nothing: shares are
  // addressed by content.
  {
    std::ifstream in(m / "big", std::ios::binary);
    std::ofstream out(m / "copy", std::ios::binary);
    out << in.rdbuf();
  }
  const auto copied = m.stats();
  CHECK(copied.at("bytes_sent") - after.at("bytes_sent") < size / 100);
  m.remount();
  std::ifstream in(m / "big", std::ios::binary);
  in.seekg(30 << 20);
  char edit[12];
  in.read(edit, 12);
  CHECK(std::string(edit, 12) == "a small edit");
}

TEST_CASE("mount: a long write uploads as it goes and keeps the local write-back small",
          "[mount][cache]") {
  // Write-behind uploads before the close, with the malware check on or off. With it on, the
  // shares wait unreferenced for its verdict, and the local bytes stay until the check ahead has
  // read them: a part of it more.
  const bool scan = GENERATE(false, true);
  INFO((scan ? "malware check on" : "malware check off"));
  Mount m(scan ? "allow_other" : "allow_other,noscan");
  const std::size_t size = 200u << 20;
  const int fd = ::open((m / "stream").c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  std::string chunk(1 << 20, '\0');
  std::mt19937_64 rng(4);
  std::uint64_t sum = 0;
  std::uint64_t peak = 0;
  for (std::size_t done = 0; done < size; done += chunk.size()) {
    for (std::size_t i = 0; i < chunk.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(chunk.data() + i, &v, 8);
    }
    for (const char c : chunk)
      sum = sum * 131 + static_cast<unsigned char>(c);
    REQUIRE(::write(fd, chunk.data(), chunk.size()) == static_cast<ssize_t>(chunk.size()));
    if (done % (16u << 20) == 0)
      peak = std::max(peak, m.stats().at("writeback_bytes"));
  }
  const auto before_close = m.stats();
  INFO("local write-back peaked at " << peak << " bytes");
  // The 64 MiB bound and a segment or two in flight; with the check, a 32 MiB part more.
  CHECK(peak <= (scan ? 104u << 20 : 72u << 20));
  CHECK(before_close.at("segments_uploaded_ahead") > 400);  // most of 800 segments
  REQUIRE(::close(fd) == 0);
  const auto after_close = m.stats();
  CHECK(after_close.at("writeback_bytes") == 0);
  // Each share went up once, though the close takes over from the batch the background upload
  // had on its way (random bytes: the servers hold none before). Each tree commit sends a share
  // to each server too.
  CHECK(after_close.at("shares_sent") ==
        2 * size / splitfs::core::kDefaultSegmentBytes + 2 * after_close.at("tree_commits"));
  CHECK(after_close.at("shares_skipped") == 0);
  m.remount();
  CHECK(read_direct(m / "stream") == sum);
}

TEST_CASE("mount: unmounting with pending changes commits them", "[mount][cache]") {
  Mount m("commit_delay=60");  // namespace changes would wait a minute
  REQUIRE(::mkdir((m / "kept").c_str(), 0700) == 0);
  REQUIRE(::chmod((m / "kept").c_str(), 0711) == 0);
  REQUIRE(::symlink("kept", (m / "link").c_str()) == 0);
  // A stored file, then removed: its content must leave the servers too.
  { std::ofstream(m / "doomed") << "soon gone"; }
  // A small new file uploads just after its close (group commit), with a commit of the tree.
  for (int i = 0; i < 3000 && m.stats().at("files_pending") != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(m.stats().at("files_pending") == 0);
  struct stat doomed {};
  REQUIRE(::stat((m / "doomed").c_str(), &doomed) == 0);
  REQUIRE(::unlink((m / "doomed").c_str()) == 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  CHECK(m.stats().at("tree_pending") == 1);
  // The command a user runs: it returns once the mount process has committed and exited.
  const pid_t pid = m.pid();
  CHECK(splitfs::testing::run_program(
            {splitfs::testing::bin_dir() + "/splitfs", "umount", m.mountpoint.string()}) == 0);
  CHECK_FALSE(splitfs::fs::is_mount_point(m.mountpoint));
  CHECK((::kill(pid, 0) != 0 || std::ifstream("/proc/" + std::to_string(pid) + "/stat").good()));
  m.unmount();  // reaps the process: it must have exited cleanly
  m.mount();
  struct stat st {};
  REQUIRE(::stat((m / "kept").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0711);
  char target[16] = {};
  CHECK(::readlink((m / "link").c_str(), target, sizeof target) == 4);
  splitfs::Client client(m.home);
  CHECK_THROWS_AS(client.open_object("ino/" + std::to_string(doomed.st_ino)), splitfs::NotFound);
}

TEST_CASE("mount: a file unlinked while open leaves the servers at unmount", "[mount][cache]") {
  Mount m;
  { std::ofstream(m / "open-then-unlinked") << "content on the servers"; }
  struct stat st {};
  REQUIRE(::stat((m / "open-then-unlinked").c_str(), &st) == 0);
  const int fd = ::open((m / "open-then-unlinked").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(::unlink((m / "open-then-unlinked").c_str()) == 0);
  char buf[8];
  CHECK(::read(fd, buf, sizeof buf) == 8);  // still readable
  ::close(fd);
  m.unmount();
  splitfs::Client client(m.home);
  CHECK_THROWS_AS(client.open_object("ino/" + std::to_string(st.st_ino)), splitfs::NotFound);
  m.mount();
}

TEST_CASE("mount: a read over hundreds of segments, stored and changed, reads back right",
          "[mount][cache]") {
  // The smallest segments there are (2 KiB): a 1 MiB read spans 512 or 513 of them, stored ones
  // (sent to the kernel straight from the cache) between changed ones and a hole.
  Mount m;
  m.unmount();
  {
    std::string config = read_file(m.home / "config.toml");
    const std::size_t at = config.find("segment_bytes = ");
    REQUIRE(at != std::string::npos);
    config.replace(at, config.find('\n', at) - at, "segment_bytes = 2048");
    write_file(m.home / "config.toml", config);
  }
  m.mount();
  constexpr std::size_t kSize = 3u << 20;
  write_random(m / "f", kSize, 7);
  m.remount();
  std::string want(kSize, '\0');
  {
    std::ifstream in(m / "f", std::ios::binary);
    in.read(want.data(), static_cast<std::streamsize>(kSize));
    REQUIRE(in.gcount() == static_cast<std::streamsize>(kSize));
  }
  // Changes every 64 KiB, not stored yet, and a hole past the old end.
  const int fd = ::open((m / "f").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  for (std::size_t at = 4096; at < kSize; at += 64u << 10) {
    const std::string edit(100, static_cast<char>('a' + (at >> 16) % 26));
    REQUIRE(::pwrite(fd, edit.data(), edit.size(), static_cast<off_t>(at)) == 100);
    want.replace(at, edit.size(), edit);
  }
  REQUIRE(::pwrite(fd, "end", 3, static_cast<off_t>(kSize + 5000)) == 3);
  want += std::string(5000, '\0') + "end";
  ::close(fd);
  const int direct = ::open((m / "f").c_str(), O_RDONLY | O_DIRECT);
  REQUIRE(direct >= 0);
  std::string got(1u << 20, '\0');
  for (const std::size_t offset : {std::size_t{0}, std::size_t{1000}, kSize - (1u << 20) + 4000}) {
    INFO("offset " << offset);
    const ssize_t n = ::pread(direct, got.data(), got.size(), static_cast<off_t>(offset));
    REQUIRE(n == static_cast<ssize_t>(std::min(got.size(), want.size() - offset)));
    CHECK(got.compare(0, static_cast<std::size_t>(n), want, offset, static_cast<std::size_t>(n)) ==
          0);
  }
  ::close(direct);
}
