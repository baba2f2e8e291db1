// The mount when a server goes away: fsync fails with EIO within the library's deadlines instead
// of hanging, close() keeps the changes in the local journal, what needs no network keeps
// working, and changes kept locally are stored once the server is back.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <string>

#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"

using splitfs::testing::Mount;
using splitfs::testing::read_file;

namespace {}  // namespace

TEST_CASE(
    "mount: a dead server gives EIO to fsync, not a hang, and changes are stored once it "
    "is back",
    "[mount][failure]") {
  Mount m;
  std::ofstream(m / "before") << "stored before the failure";
  REQUIRE(::mkdir((m / "dir").c_str(), 0755) == 0);
  // A small new file uploads just after its close (group commit): wait for it.
  for (int i = 0; i < 3000 && m.stats().at("files_pending") != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  REQUIRE(m.stats().at("files_pending") == 0);
  m.servers.tcp.kill(SIGKILL);

  const auto start = std::chrono::steady_clock::now();
  const int fd = ::open((m / "during").c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(fd >= 0);  // namespace changes need no network
  REQUIRE(::write(fd, "written while the TCP server is down", 36) == 36);
  CHECK(::fsync(fd) == -1);
  CHECK(errno == EIO);
  CHECK(::close(fd) == 0);  // kept in the local journal until the server is back
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < std::chrono::seconds(30));

  // Metadata is served from memory; cached data from the cache.
  struct stat st {};
  CHECK(::stat((m / "dir").c_str(), &st) == 0);
  CHECK(::stat((m / "during").c_str(), &st) == 0);
  CHECK(st.st_size == 36);
  CHECK(read_file(m / "before") == "stored before the failure");
  CHECK(m.stats().at("files_pending") == 1);

  m.servers.tcp.restart();
  // The mount tries again on its own.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (m.stats().at("files_pending") != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(m.stats().at("files_pending") == 0);
  m.remount();
  INFO("mount log:\n" << read_file(m.home / "mount.log"));
  CHECK(read_file(m / "during") == "written while the TCP server is down");
  CHECK(read_file(m / "before") == "stored before the failure");
}
