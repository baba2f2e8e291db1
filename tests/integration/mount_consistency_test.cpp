// Two mounts of one store: each sees the other's committed changes within a bounded time,
// concurrent namespace changes are merged, and two writers to one file never mix: the first
// close wins, the second keeps its bytes in a conflict copy beside the file.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"

using splitfs::testing::Mount;
using splitfs::testing::read_file;
using splitfs::testing::write_file;

namespace {

constexpr const char* kFast = "allow_other,refresh=0.2,attr_timeout=0.2,entry_timeout=0.2";

// Waits up to 10 s for a condition another mount's change makes true.
template <class F>
bool eventually(F&& f) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (f())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return f();
}

std::vector<std::string> names_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Two writers of one file: "shared" holds "original" on both mounts, both write it at once, and
// a's close comes first (it wins). Returns b's descriptor, still open with "BBBBBBBBBB" written.
int race_on_shared(const Mount& a, const Mount& b) {
  write_file(a / "shared", "original");
  REQUIRE(eventually([&] { return read_file(b / "shared") == "original"; }));
  const int fa = ::open((a / "shared").c_str(), O_WRONLY);
  const int fb = ::open((b / "shared").c_str(), O_WRONLY);
  REQUIRE(fa >= 0);
  REQUIRE(fb >= 0);
  REQUIRE(::pwrite(fa, "AAAAAAAA", 8, 0) == 8);
  REQUIRE(::pwrite(fb, "BBBBBBBBBB", 10, 0) == 10);
  CHECK(::close(fa) == 0);
  return fb;
}

}  // namespace

TEST_CASE("mount: a second mount sees committed changes within a bounded time",
          "[mount][consistency]") {
  Mount a(kFast);
  Mount b(a, kFast);
  write_file(a / "from_a", "written by a");
  CHECK(eventually([&] { return read_file(b / "from_a") == "written by a"; }));
  REQUIRE(::mkdir((b / "dir_b").c_str(), 0700) == 0);
  write_file(b / "dir_b" / "inner", "inner");
  CHECK(eventually([&] { return read_file(a / "dir_b" / "inner") == "inner"; }));
  struct stat st {};
  REQUIRE(::stat((a / "dir_b").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0700);

  // A changed file: the other mount shows the new size and bytes.
  write_file(a / "from_a", "written by a, then longer");
  CHECK(eventually([&] { return read_file(b / "from_a") == "written by a, then longer"; }));
  REQUIRE(::stat((b / "from_a").c_str(), &st) == 0);
  CHECK(st.st_size == 25);

  // Removals and renames travel too.
  REQUIRE(::rename((a / "from_a").c_str(), (a / "renamed").c_str()) == 0);
  CHECK(eventually([&] {
    return names_in(b.mountpoint) == std::vector<std::string>{"dir_b", "renamed"};
  }));
}

TEST_CASE("mount: a name looked up as absent appears when another mount creates it",
          "[mount][consistency]") {
  // Names that are not there are cached for entry_timeout like names that are; a minute here, so
  // only the invalidation that comes with the other mount's change can show the new name in time.
  constexpr const char* kLongNames = "allow_other,refresh=0.2,entry_timeout=60";
  Mount a(kLongNames);
  Mount b(a, kLongNames);
  REQUIRE(::mkdir((a / "dir").c_str(), 0755) == 0);
  CHECK(eventually([&] { return std::filesystem::is_directory(b / "dir"); }));
  struct stat st {};
  for (const char* name : {"late", "dir/late"}) {
    INFO(name);
    REQUIRE(::stat((b / name).c_str(), &st) == -1);
    REQUIRE(errno == ENOENT);
    write_file(a / name, "created by a");
    CHECK(eventually([&] { return read_file(b / name) == "created by a"; }));
  }
}

TEST_CASE("mount: a conflict copy appears although its name was looked up as absent",
          "[mount][consistency]") {
  // As above, absent names are cached for a minute: only an invalidation shows the copy in time.
  Mount a(kFast);
  Mount b(a, "allow_other,refresh=0.2,attr_timeout=0.2,entry_timeout=60");
  char host[64] = "host";
  ::gethostname(host, sizeof host - 1);
  const std::string copy =
      "shared.conflict-" + std::string(host) + "-" + std::to_string(b.stats().at("pid")) + "-1";
  const int fb = race_on_shared(a, b);
  struct stat st {};
  REQUIRE(::stat((b / copy).c_str(), &st) == -1);
  REQUIRE(errno == ENOENT);
  CHECK(::close(fb) == 0);
  CHECK(b.stats().at("conflicts") == 1);
  CHECK(eventually([&] { return read_file(b / copy) == "BBBBBBBBBB"; }));
}

TEST_CASE("mount: concurrent namespace changes of two mounts are merged", "[mount][consistency]") {
  Mount a("allow_other,refresh=0.2,commit_delay=1");
  Mount b(a, "allow_other,refresh=0.2,commit_delay=1");
  // Both change the tree before either commits.
  for (int i = 0; i < 20; ++i) {
    REQUIRE(::mkdir((a / ("a" + std::to_string(i))).c_str(), 0755) == 0);
    REQUIRE(::mkdir((b / ("b" + std::to_string(i))).c_str(), 0755) == 0);
  }
  const auto all = [&](const Mount& m) { return names_in(m.mountpoint).size() == 40; };
  CHECK(eventually([&] { return all(a) && all(b); }));
  a.remount();
  CHECK(names_in(a.mountpoint).size() == 40);
}

TEST_CASE("mount: two writers to one file: the first close wins, the second gets a copy",
          "[mount][consistency]") {
  Mount a(kFast);
  Mount b(a, kFast);
  CHECK(::close(race_on_shared(a, b)) == 0);  // succeeds: its bytes are kept in a conflict copy
  CHECK(b.stats().at("conflicts") == 1);
  const auto settled = [&](const Mount& m) {
    const auto names = names_in(m.mountpoint);
    return names.size() == 2 && read_file(m / "shared") == "AAAAAAAA" &&
           names[1].rfind("shared.conflict-", 0) == 0 && read_file(m / names[1]) == "BBBBBBBBBB";
  };
  CHECK(eventually([&] { return settled(a); }));
  CHECK(eventually([&] { return settled(b); }));
  b.remount();
  CHECK(settled(b));
}
