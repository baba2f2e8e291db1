// Servers that run out of space: one with a configured capacity, one whose data folder is on a
// small tmpfs that really fills up (ENOSPC). Each answers a clear error that the library turns into
// QuotaExceeded naming the server and saying it is out of space; everything stored before stays
// byte-identical and the store consistent; after files are removed and the store compacted, it
// stores again.
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <csignal>

#include "tests/integration/reliability_fixture.hpp"

using namespace reliability;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMiB = 1u << 20;

// Stores files of `size` bytes named filler-N until one is refused; returns how many were stored.
// The refusal must be QuotaExceeded from `kind` saying the server is out of space.
int fill(splitfs::Client& client, const fs::path& work, std::uint64_t seed, std::size_t size,
         const std::string& kind) {
  for (int n = 0; n < 200; ++n) {
    const std::string name = "filler-" + std::to_string(n);
    write_file(work / name, content(seed + n, size));
    try {
      client.store(work / name, name);
    } catch (const splitfs::QuotaExceeded& e) {
      const std::string message = e.what();
      INFO(message);
      CHECK(message.find(kind + " server at ") != std::string::npos);  // "": either server
      CHECK(message.find("out of storage space") != std::string::npos);
      std::printf("diskfull (%s): %d files of %zu bytes stored, then: %s\n", kind.c_str(), n, size,
                  message.c_str());
      std::fflush(stdout);
      return n;
    }
    fs::remove(work / name);
  }
  FAIL("the server never ran out of space");
  return 0;
}

void expect_content(splitfs::Client& client, const fs::path& out, const std::string& name,
                    const std::string& data) {
  const fs::path target = client.fetch(name, out);
  CHECK(read_file(target) == data);
  fs::remove(target);
}

void expect_consistent(const ServerProcess& server) {
  const auto check = server.command({"check"});
  INFO(check.output);
  CHECK(check.status == 0);
}

// Removes the fillers and has the running server compact at once.
void free_space(splitfs::Client& client, const std::vector<const ServerProcess*>& servers,
                int fillers) {
  for (int n = 0; n < fillers; ++n)
    client.remove("filler-" + std::to_string(n));
  for (const auto* server : servers) {
    const auto compacted = server->command({"compact", "--grace", "0", "--wait", "60"});
    INFO(compacted.output);
    CHECK(compacted.status == 0);
  }
}

// A tmpfs of `bytes`, unmounted (lazily) at the end.
class SmallFilesystem {
 public:
  SmallFilesystem(const fs::path& where, std::size_t bytes) : where_(where) {
    fs::create_directories(where);
    const std::string options = "size=" + std::to_string(bytes) + ",mode=0700";
    mounted_ = ::mount("tmpfs", where.c_str(), "tmpfs", 0, options.c_str()) == 0;
  }
  ~SmallFilesystem() {
    if (mounted_)
      ::umount2(where_.c_str(), MNT_DETACH);
  }
  SmallFilesystem(const SmallFilesystem&) = delete;
  SmallFilesystem& operator=(const SmallFilesystem&) = delete;
  bool mounted() const { return mounted_; }
  std::uint64_t free_bytes() const {
    struct statvfs st {};
    ::statvfs(where_.c_str(), &st);
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  }

 private:
  fs::path where_;
  bool mounted_ = false;
};

}  // namespace

TEST_CASE("a server at its configured capacity refuses clearly, keeps everything, recovers",
          "[reliability][diskfull]") {
  const std::uint64_t seed = seed_for("capacity");
  Proxied p(seed, 1000ms, 5000ms, {"--capacity", "20M", "--compact-interval", "0"});
  auto client = p.direct_client();
  fs::create_directories(p.work / "out");
  const std::string kept = content(seed, 2 * kMiB + 7);
  write_file(p.work / "kept.bin", kept);
  client.store(p.work / "kept.bin", "kept.bin");

  const int fillers = fill(client, p.work.path(), seed + 1, 3 * kMiB, "");
  CHECK(fillers >= 8);  // most of the 20 MiB was usable
  expect_content(client, p.work / "out", "kept.bin", kept);
  for (int n = 0; n < fillers; ++n)
    expect_content(client, p.work / "out", "filler-" + std::to_string(n),
                   content(seed + 1 + n, 3 * kMiB));
  expect_consistent(p.servers.https);
  expect_consistent(p.servers.tcp);

  free_space(client, {&p.servers.https, &p.servers.tcp}, fillers);
  const std::string again = content(seed + 999, 6 * kMiB);
  write_file(p.work / "again.bin", again);
  client.store(p.work / "again.bin", "again.bin");
  expect_content(client, p.work / "out", "again.bin", again);
  expect_content(client, p.work / "out", "kept.bin", kept);
  expect_consistent(p.servers.https);
}

TEST_CASE("a server whose disk fills up refuses clearly, keeps everything, recovers",
          "[reliability][diskfull]") {
  const std::uint64_t seed = seed_for("enospc");
  TempDir root("splitfs-enospc");
  SmallFilesystem disk(root / "disk", 40 * kMiB);
  if (!disk.mounted()) {
    WARN("cannot mount a tmpfs here (not root?): the full-disk case is not run");
    return;
  }
  ServerProcess https("splitfs-https-server", root / "https", {"--compact-interval", "0"});
  ServerProcess tcp("splitfs-tcp-server", root / "disk" / "tcp", {"--compact-interval", "0"});
  splitfs::InitOptions options = splitfs::testing::pinned_options(https, tcp);
  splitfs::init(root / "client", options);
  splitfs::Client client(root / "client");
  fs::create_directories(root / "out");

  const std::string kept = content(seed, 2 * kMiB + 7);
  write_file(root / "kept.bin", kept);
  client.store(root / "kept.bin", "kept.bin");

  const int fillers = fill(client, root.path(), seed + 1, 3 * kMiB, "TCP");
  CHECK(fillers >= 8);
  // The reserve was given back for the removals and the compaction to come.
  CHECK(disk.free_bytes() >= 4 * kMiB);
  expect_content(client, root / "out", "kept.bin", kept);
  for (int n = 0; n < fillers; ++n)
    expect_content(client, root / "out", "filler-" + std::to_string(n),
                   content(seed + 1 + n, 3 * kMiB));
  expect_consistent(tcp);
  // Refused again at once while full, with the same clear error.
  write_file(root / "more.bin", content(seed + 500, 3 * kMiB));
  CHECK_THROWS_AS(client.store(root / "more.bin", "more.bin"), splitfs::QuotaExceeded);

  free_space(client, {&tcp}, fillers);
  std::printf("diskfull (TCP): %llu bytes free on its disk after removing and compacting\n",
              static_cast<unsigned long long>(disk.free_bytes()));
  const std::string again = content(seed + 999, 6 * kMiB);
  write_file(root / "again.bin", again);
  client.store(root / "again.bin", "again.bin");
  expect_content(client, root / "out", "again.bin", again);
  expect_content(client, root / "out", "kept.bin", kept);
  expect_consistent(tcp);
  // Killed and started again on the full disk's survivor: still everything there.
  tcp.kill(SIGKILL);
  tcp.restart();
  splitfs::InitOptions moved = options;
  moved.tcp = tcp.address();
  moved.force = true;
  splitfs::init(root / "client", moved);
  splitfs::Client after(root / "client");
  expect_content(after, root / "out", "kept.bin", kept);
  expect_content(after, root / "out", "again.bin", again);
  https.stop();
  tcp.stop();
}
