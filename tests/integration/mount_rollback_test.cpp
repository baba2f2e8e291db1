// Rollback seen through the mount: a server restored from an older copy of its data folder makes
// reads of what it no longer holds fail with EIO and a log line naming that server; both servers
// restored to older copies make the mount refuse to start, naming the rollback.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"

using splitfs::testing::Mount;
using splitfs::testing::read_file;
using splitfs::testing::ServerProcess;
namespace fs = std::filesystem;

namespace {

void write_random(const fs::path& p, std::size_t bytes, unsigned seed) {
  std::mt19937 random(seed);
  std::string data(bytes, '\0');
  for (auto& c : data)
    c = static_cast<char>(random());
  std::ofstream(p, std::ios::binary) << data;
}

// A copy of a stopped server's data folder, as a backup would take it.
fs::path backup(ServerProcess& server, const fs::path& copy) {
  server.stop();
  fs::copy(server.data_dir(), copy, fs::copy_options::recursive);
  server.restart();
  return copy;
}

void restore(ServerProcess& server, const fs::path& copy) {
  server.stop();
  fs::remove_all(server.data_dir());
  fs::copy(copy, server.data_dir(), fs::copy_options::recursive);
  server.restart();
}

}  // namespace

TEST_CASE("mount: a server restored from an older copy gives EIO and a log line naming it",
          "[mount][security]") {
  Mount m;
  write_random(m / "before", 200000, 1);
  m.unmount();
  const fs::path copy = backup(m.servers.tcp, m.dir / "tcp-backup");
  m.mount();
  write_random(m / "after", 200000, 2);
  m.unmount();
  restore(m.servers.tcp, copy);

  m.mount();
  CHECK(read_file(m / "before").size() == 200000);  // what the old copy holds is still served
  const int fd = ::open((m / "after").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::string buf(4096, '\0');
  CHECK(::read(fd, buf.data(), buf.size()) == -1);
  CHECK(errno == EIO);
  ::close(fd);
  const std::string log = read_file(m.home / "mount.log");
  INFO(log);
  CHECK(log.find("TCP server at " + m.servers.tcp.address()) != std::string::npos);
}

TEST_CASE("mount: both servers restored to older copies are refused as a rollback",
          "[mount][security]") {
  Mount m;
  std::ofstream(m / "doc") << "version one";
  m.unmount();
  const fs::path https = backup(m.servers.https, m.dir / "https-backup");
  const fs::path tcp = backup(m.servers.tcp, m.dir / "tcp-backup");
  m.mount();
  std::ofstream(m / "doc") << "version two, which the restored servers never saw";
  m.unmount();
  restore(m.servers.https, https);
  restore(m.servers.tcp, tcp);

  const std::string out = (m.dir / "refused.out").string();
  const int status = splitfs::testing::run_program(
      {"sh", "-c",
       splitfs::testing::bin_dir() + "/splitfs --home '" + m.home.string() + "' mount '" +
           m.mountpoint.string() + "' >'" + out + "' 2>&1"});
  CHECK(status != 0);
  CHECK_FALSE(splitfs::fs::is_mount_point(m.mountpoint));
  const std::string said = read_file(out);
  INFO(said);
  CHECK(said.find("rollback") != std::string::npos);
}
