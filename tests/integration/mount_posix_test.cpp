// POSIX behaviour of a real mount, syscall by syscall, with the errno of every failure path as a
// conformance suite checks it: directories, files, renames (plain, RENAME_NOREPLACE,
// RENAME_EXCHANGE), hard and symbolic links, modes, owners and times, truncation, O_APPEND,
// sparse writes, unlinked open files, permissions as an unprivileged user, xattrs, locks, special
// files, name limits, and that all of it survives a remount.
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <set>
#include <string>

#include "tests/integration/mount_fixture.hpp"

using splitfs::testing::Mount;
namespace fsys = std::filesystem;

namespace {

// errno of a failed call, 0 on success.
int err(long result) {
  return result == -1 ? errno : 0;
}

struct stat stat_of(const fsys::path& p) {
  struct stat st {};
  REQUIRE(::lstat(p.c_str(), &st) == 0);
  return st;
}

std::int64_t ns(const timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

void put(const fsys::path& p, const std::string& data, mode_t mode = 0644) {
  const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  REQUIRE(::close(fd) == 0);
}

std::string get(const fsys::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

int renameat2(const fsys::path& from, const fsys::path& to, unsigned flags) {
  return static_cast<int>(
      ::syscall(SYS_renameat2, AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags));
}

// Runs f as uid/gid 65534 (nobody) in a child process; returns what f returns (an errno).
int as_nobody(const std::function<int()>& f) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)
      ::_exit(250);
    ::_exit(f());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 251;
}

// Makes sure a moment passes, so that a changed time differs from an old one.
void tick() {
  ::usleep(20'000);
}

}  // namespace

TEST_CASE("mount: directories", "[mount]") {
  Mount m;
  const auto d = m / "d";
  CHECK(err(::mkdir(d.c_str(), 0750)) == 0);
  CHECK(err(::mkdir(d.c_str(), 0750)) == EEXIST);
  CHECK((stat_of(d).st_mode & 07777) == 0750);
  CHECK(S_ISDIR(stat_of(d).st_mode));
  CHECK(stat_of(d).st_nlink == 2);
  const auto root_before = stat_of(m.mountpoint);
  tick();
  CHECK(err(::mkdir((d / "sub").c_str(), 0755)) == 0);
  CHECK(stat_of(d).st_nlink == 3);
  CHECK(ns(stat_of(d).st_mtim) > ns(root_before.st_mtim));
  CHECK(err(::mkdir((m / "missing" / "x").c_str(), 0755)) == ENOENT);
  put(m / "file", "x");
  CHECK(err(::mkdir((m / "file" / "x").c_str(), 0755)) == ENOTDIR);
  CHECK(err(::rmdir(d.c_str())) == ENOTEMPTY);
  CHECK(err(::rmdir((m / "file").c_str())) == ENOTDIR);
  CHECK(err(::rmdir((m / "nothing").c_str())) == ENOENT);
  CHECK(err(::rmdir((d / "sub").c_str())) == 0);
  CHECK(stat_of(d).st_nlink == 2);
  CHECK(err(::rmdir(d.c_str())) == 0);
  CHECK(err(::access(d.c_str(), F_OK)) == ENOENT);
  CHECK(err(::rmdir((m / ".").c_str())) != 0);

  // readdir lists every entry once, and not the control directory.
  for (int i = 0; i < 300; ++i)
    put(m / std::string("e").append(std::to_string(i)), "");
  std::set<std::string> names;
  for (const auto& e : fsys::directory_iterator(m.mountpoint))
    names.insert(e.path().filename().string());
  CHECK(names.size() == 301);
  CHECK_FALSE(names.contains(".splitfs"));
  CHECK(fsys::exists(m / ".splitfs" / "stats"));
  CHECK(err(::mkdir((m / ".splitfs").c_str(), 0755)) == EEXIST);
}

TEST_CASE("mount: files, names and limits", "[mount]") {
  Mount m;
  const auto f = m / "f";
  int fd = ::open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640);
  REQUIRE(fd >= 0);
  ::close(fd);
  CHECK((stat_of(f).st_mode & 07777) == 0640);
  CHECK(stat_of(f).st_size == 0);
  CHECK(stat_of(f).st_uid == 0);
  CHECK(err(::open(f.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0640)) == EEXIST);
  CHECK(err(::open((m / "missing").c_str(), O_RDONLY)) == ENOENT);
  CHECK(err(::mkdir((m / "dir").c_str(), 0755)) == 0);
  CHECK(err(::open((m / "dir").c_str(), O_WRONLY)) == EISDIR);
  CHECK(err(::unlink((m / "dir").c_str())) == EISDIR);
  CHECK(err(::unlink((m / "missing").c_str())) == ENOENT);
  CHECK(err(::open((f / "x").c_str(), O_RDONLY)) == ENOTDIR);
  const int dir_fd = ::open((m / "dir").c_str(), O_RDONLY | O_DIRECTORY);
  CHECK(dir_fd >= 0);
  ::close(dir_fd);

  const std::string longest(255, 'n');
  put(m / longest, "ok");
  CHECK(get(m / longest) == "ok");
  CHECK(err(::open((m / (longest + "n")).c_str(), O_CREAT | O_WRONLY, 0644)) == ENAMETOOLONG);
  CHECK(err(::mkdir((m / (longest + "n")).c_str(), 0755)) == ENAMETOOLONG);
  std::string deep = m.mountpoint.string();
  while (deep.size() < PATH_MAX + 10)
    deep.append("/").append(200, 'd');
  CHECK(err(::open(deep.c_str(), O_RDONLY)) == ENAMETOOLONG);

  struct statvfs sv {};
  REQUIRE(::statvfs(m.mountpoint.c_str(), &sv) == 0);
  CHECK(sv.f_namemax == 255);

  // Any byte but '/' and NUL is a valid name.
  const std::string odd = "sp ace\ttab\xc3\xa9\x01";
  put(m / odd, "odd");
  CHECK(get(m / odd) == "odd");
  m.remount();
  CHECK(get(m / odd) == "odd");
  CHECK(get(m / longest) == "ok");
}

TEST_CASE("mount: rename", "[mount]") {
  Mount m;
  put(m / "a", "A");
  put(m / "b", "B");
  const ino_t a_ino = stat_of(m / "a").st_ino;
  const auto ctime_before = ns(stat_of(m / "a").st_ctim);
  tick();
  CHECK(renameat2(m / "a", m / "b", RENAME_NOREPLACE) == -1);
  CHECK(errno == EEXIST);
  CHECK(err(::rename((m / "a").c_str(), (m / "b").c_str())) == 0);
  CHECK(get(m / "b") == "A");
  CHECK(stat_of(m / "b").st_ino == a_ino);
  CHECK(ns(stat_of(m / "b").st_ctim) > ctime_before);
  CHECK(err(::access((m / "a").c_str(), F_OK)) == ENOENT);
  CHECK(err(::rename((m / "a").c_str(), (m / "c").c_str())) == ENOENT);

  put(m / "x", "X");
  CHECK(renameat2(m / "x", m / "b", RENAME_EXCHANGE) == 0);
  CHECK(get(m / "x") == "A");
  CHECK(get(m / "b") == "X");
  CHECK(stat_of(m / "x").st_ino == a_ino);
  CHECK(renameat2(m / "x", m / "nope", RENAME_EXCHANGE) == -1);
  CHECK(errno == ENOENT);
  CHECK(renameat2(m / "x", m / "b", RENAME_EXCHANGE | RENAME_NOREPLACE) == -1);
  CHECK(errno == EINVAL);

  CHECK(err(::mkdir((m / "d").c_str(), 0755)) == 0);
  CHECK(err(::mkdir((m / "d" / "sub").c_str(), 0755)) == 0);
  CHECK(err(::mkdir((m / "full").c_str(), 0755)) == 0);
  put(m / "full" / "f", "");
  CHECK(err(::rename((m / "d").c_str(), (m / "d" / "sub" / "d").c_str())) == EINVAL);
  CHECK(err(::rename((m / "d").c_str(), (m / "full").c_str())) == ENOTEMPTY);
  CHECK(err(::rename((m / "x").c_str(), (m / "d").c_str())) == EISDIR);
  CHECK(err(::rename((m / "d").c_str(), (m / "x").c_str())) == ENOTDIR);
  CHECK(err(::rename((m / "d" / "sub").c_str(), (m / "full" / "sub").c_str())) == 0);
  CHECK(stat_of(m / "d").st_nlink == 2);
  CHECK(stat_of(m / "full").st_nlink == 3);
  CHECK(renameat2(m / "d", m / "x", RENAME_EXCHANGE) == 0);  // a directory and a file
  CHECK(S_ISDIR(stat_of(m / "x").st_mode));
  CHECK(get(m / "d") == "A");

  // Cross-device renames are the kernel's EXDEV.
  const auto outside = m.dir.path() / "outside";
  put(outside, "o");
  CHECK(err(::rename(outside.c_str(), (m / "o").c_str())) == EXDEV);

  m.remount();
  CHECK(stat_of(m / "d").st_ino == a_ino);  // numbers survive renames and remounts
  CHECK(get(m / "b") == "X");
  CHECK(S_ISDIR(stat_of(m / "full" / "sub").st_mode));
}

TEST_CASE("mount: hard links and symlinks", "[mount]") {
  Mount m;
  put(m / "f", "shared");
  CHECK(stat_of(m / "f").st_nlink == 1);
  CHECK(err(::link((m / "f").c_str(), (m / "g").c_str())) == 0);
  CHECK(err(::mkdir((m / "d").c_str(), 0755)) == 0);
  CHECK(err(::link((m / "f").c_str(), (m / "d" / "h").c_str())) == 0);
  for (const char* name : {"f", "g", "d/h"})
    CHECK(stat_of(m / name).st_nlink == 3);
  CHECK(stat_of(m / "g").st_ino == stat_of(m / "f").st_ino);
  CHECK(err(::link((m / "f").c_str(), (m / "g").c_str())) == EEXIST);
  CHECK(err(::link((m / "d").c_str(), (m / "d2").c_str())) == EPERM);
  CHECK(err(::link((m / "none").c_str(), (m / "n2").c_str())) == ENOENT);
  put(m / "g", "changed through g");
  CHECK(get(m / "d" / "h") == "changed through g");
  CHECK(err(::unlink((m / "f").c_str())) == 0);
  CHECK(stat_of(m / "g").st_nlink == 2);

  CHECK(err(::symlink("g", (m / "s").c_str())) == 0);
  CHECK(S_ISLNK(stat_of(m / "s").st_mode));
  CHECK(stat_of(m / "s").st_size == 1);
  char buf[PATH_MAX];
  CHECK(::readlink((m / "s").c_str(), buf, sizeof buf) == 1);
  CHECK(buf[0] == 'g');
  CHECK(get(m / "s") == "changed through g");
  CHECK(::readlink((m / "g").c_str(), buf, sizeof buf) == -1);
  CHECK(errno == EINVAL);
  CHECK(err(::symlink("x", (m / "s").c_str())) == EEXIST);
  CHECK(err(::symlink("loop2", (m / "loop1").c_str())) == 0);
  CHECK(err(::symlink("loop1", (m / "loop2").c_str())) == 0);
  CHECK(err(::open((m / "loop1").c_str(), O_RDONLY)) == ELOOP);
  CHECK(err(::open((m / "s").c_str(), O_RDONLY | O_NOFOLLOW)) == ELOOP);
  const std::string long_target(4095, 't');
  CHECK(err(::symlink(long_target.c_str(), (m / "long").c_str())) == 0);
  CHECK(::readlink((m / "long").c_str(), buf, sizeof buf) == 4095);

  m.remount();
  CHECK(stat_of(m / "g").st_nlink == 2);
  CHECK(stat_of(m / "d" / "h").st_nlink == 2);
  CHECK(::readlink((m / "s").c_str(), buf, sizeof buf) == 1);
  CHECK(::readlink((m / "long").c_str(), buf, sizeof buf) == 4095);
}

TEST_CASE("mount: modes, owners and times", "[mount]") {
  Mount m;
  put(m / "f", "data");
  auto before = stat_of(m / "f");
  tick();
  CHECK(err(::chmod((m / "f").c_str(), 04751)) == 0);
  auto st = stat_of(m / "f");
  CHECK((st.st_mode & 07777) == 04751);
  CHECK(ns(st.st_ctim) > ns(before.st_ctim));
  CHECK(ns(st.st_mtim) == ns(before.st_mtim));
  CHECK(err(::chown((m / "f").c_str(), 1234, 5678)) == 0);
  st = stat_of(m / "f");
  CHECK(st.st_uid == 1234);
  CHECK(st.st_gid == 5678);
  CHECK(err(::lchown((m / "f").c_str(), static_cast<uid_t>(-1), 42)) == 0);
  CHECK(stat_of(m / "f").st_uid == 1234);
  CHECK(stat_of(m / "f").st_gid == 42);

  timespec times[2] = {{1000, 111}, {2000, 222}};
  CHECK(err(::utimensat(AT_FDCWD, (m / "f").c_str(), times, 0)) == 0);
  st = stat_of(m / "f");
  CHECK(ns(st.st_atim) == 1000'000'000'111);
  CHECK(ns(st.st_mtim) == 2000'000'000'222);
  timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
  CHECK(err(::utimensat(AT_FDCWD, (m / "f").c_str(), omit_now, 0)) == 0);
  st = stat_of(m / "f");
  CHECK(ns(st.st_atim) == 1000'000'000'111);
  CHECK(st.st_mtim.tv_sec > 2000);
  timespec now_omit[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
  const auto mtime = ns(st.st_mtim);
  CHECK(err(::utimensat(AT_FDCWD, (m / "f").c_str(), now_omit, 0)) == 0);
  st = stat_of(m / "f");
  CHECK(st.st_atim.tv_sec > 1000);
  CHECK(ns(st.st_mtim) == mtime);

  // A write moves mtime and ctime; the directory's times move on create and unlink.
  before = stat_of(m / "f");
  const auto dir_before = stat_of(m.mountpoint);
  tick();
  {
    const int fd = ::open((m / "f").c_str(), O_WRONLY);
    REQUIRE(fd >= 0);
    CHECK(::pwrite(fd, "x", 1, 0) == 1);
    ::close(fd);
  }
  st = stat_of(m / "f");
  CHECK(ns(st.st_mtim) > ns(before.st_mtim));
  CHECK(ns(st.st_ctim) > ns(before.st_ctim));
  put(m / "g", "");
  CHECK(ns(stat_of(m.mountpoint).st_mtim) > ns(dir_before.st_mtim));

  // Set-group-ID directories pass their group on.
  CHECK(err(::mkdir((m / "shared").c_str(), 02775)) == 0);
  CHECK(err(::chown((m / "shared").c_str(), 0, 77)) == 0);
  CHECK(err(::chmod((m / "shared").c_str(), 02775)) == 0);
  put(m / "shared" / "inner", "");
  CHECK(stat_of(m / "shared" / "inner").st_gid == 77);

  const auto saved = stat_of(m / "f");
  m.remount();
  st = stat_of(m / "f");
  CHECK((st.st_mode & 07777) == (saved.st_mode & 07777));
  CHECK(st.st_uid == saved.st_uid);
  CHECK(st.st_gid == saved.st_gid);
  CHECK(ns(st.st_mtim) == ns(saved.st_mtim));
  CHECK(ns(st.st_ctim) == ns(saved.st_ctim));
  CHECK(st.st_ino == saved.st_ino);
}

TEST_CASE("mount: truncate, O_APPEND, sparse files and unlinked open files", "[mount]") {
  Mount m;
  put(m / "t", "0123456789");
  CHECK(err(::truncate((m / "t").c_str(), 4)) == 0);
  CHECK(get(m / "t") == "0123");
  CHECK(err(::truncate((m / "t").c_str(), 8)) == 0);
  CHECK(get(m / "t") == std::string("0123\0\0\0\0", 8));
  CHECK(err(::truncate((m / "t").c_str(), -1)) == EINVAL);
  CHECK(err(::mkdir((m / "d").c_str(), 0755)) == 0);
  CHECK(err(::truncate((m / "d").c_str(), 0)) == EISDIR);
  int fd = ::open((m / "t").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  CHECK(::ftruncate(fd, 2) == 0);
  struct stat st {};
  CHECK(::fstat(fd, &st) == 0);
  CHECK(st.st_size == 2);
  ::close(fd);
  put(m / "t", "new", 0644);  // O_TRUNC
  CHECK(get(m / "t") == "new");

  fd = ::open((m / "log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  REQUIRE(fd >= 0);
  CHECK(::write(fd, "one,", 4) == 4);
  CHECK(::lseek(fd, 0, SEEK_SET) == 0);
  CHECK(::write(fd, "two", 3) == 3);
  ::close(fd);
  CHECK(get(m / "log") == "one,two");

  // A write far past the end leaves a hole of zeros.
  fd = ::open((m / "sparse").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  const off_t far = 10 * 1024 * 1024 + 3;
  CHECK(::pwrite(fd, "end", 3, far) == 3);
  CHECK(::pwrite(fd, "start", 5, 0) == 5);
  ::close(fd);
  std::string sparse = get(m / "sparse");
  REQUIRE(sparse.size() == static_cast<std::size_t>(far + 3));
  CHECK(sparse.substr(0, 5) == "start");
  CHECK(sparse.substr(static_cast<std::size_t>(far)) == "end");
  CHECK(sparse.find_first_not_of('\0', 5) == static_cast<std::size_t>(far));

  // An unlinked file stays usable through its descriptor.
  put(m / "ghost", "boo");
  fd = ::open((m / "ghost").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  CHECK(err(::unlink((m / "ghost").c_str())) == 0);
  CHECK(err(::access((m / "ghost").c_str(), F_OK)) == ENOENT);
  CHECK(::fstat(fd, &st) == 0);
  CHECK(st.st_nlink == 0);
  CHECK(::pwrite(fd, "!", 1, 3) == 1);
  char buf[8] = {};
  CHECK(::pread(fd, buf, sizeof buf, 0) == 4);
  CHECK(std::string(buf, 4) == "boo!");
  CHECK(::close(fd) == 0);

  m.remount();
  CHECK(get(m / "t") == "new");
  CHECK(get(m / "log") == "one,two");
  CHECK(get(m / "sparse") == sparse);
  CHECK(err(::access((m / "ghost").c_str(), F_OK)) == ENOENT);
}

TEST_CASE("mount: permissions are enforced for an unprivileged user", "[mount]") {
  Mount m;  // allow_other, so that nobody may enter at all
  CHECK(err(::chmod(m.mountpoint.c_str(), 0755)) == 0);
  put(m / "private", "secret", 0600);
  put(m / "readonly", "ro", 0644);
  CHECK(err(::mkdir((m / "open").c_str(), 0777)) == 0);
  CHECK(err(::chmod((m / "open").c_str(), 01777)) == 0);  // sticky, like /tmp
  put(m / "open" / "roots", "r", 0666);
  CHECK(as_nobody([&] { return err(::open((m / "private").c_str(), O_RDONLY)); }) == EACCES);
  CHECK(as_nobody([&] { return err(::open((m / "readonly").c_str(), O_WRONLY)); }) == EACCES);
  CHECK(as_nobody([&] { return err(::open((m / "new").c_str(), O_CREAT | O_WRONLY, 0644)); }) ==
        EACCES);
  CHECK(as_nobody([&] { return err(::mkdir((m / "newdir").c_str(), 0755)); }) == EACCES);
  CHECK(as_nobody([&] { return err(::unlink((m / "readonly").c_str())); }) == EACCES);
  CHECK(as_nobody([&] { return err(::chmod((m / "readonly").c_str(), 0777)); }) == EPERM);
  CHECK(as_nobody([&] { return err(::chown((m / "readonly").c_str(), 65534, 65534)); }) == EPERM);
  CHECK(as_nobody([&] { return err(::unlink((m / "open" / "roots").c_str())); }) == EPERM);
  CHECK(as_nobody([&] {
          const int fd = ::open((m / "open" / "mine").c_str(), O_CREAT | O_WRONLY, 0600);
          if (fd < 0)
            return errno;
          ::close(fd);
          struct stat st {};
          ::stat((m / "open" / "mine").c_str(), &st);
          return st.st_uid == 65534 && st.st_gid == 65534 ? 0 : 99;
        }) == 0);
  CHECK(as_nobody([&] { return err(::open((m / "readonly").c_str(), O_RDONLY)); }) == 0);
  CHECK(stat_of(m / "open" / "mine").st_uid == 65534);
}

TEST_CASE("mount: extended attributes", "[mount]") {
  Mount m;
  const auto f = m / "f";
  put(f, "");
  const auto before = stat_of(f);
  tick();
  CHECK(err(::setxattr(f.c_str(), "user.colour", "blue", 4, 0)) == 0);
  CHECK(ns(stat_of(f).st_ctim) > ns(before.st_ctim));
  char buf[64] = {};
  CHECK(::getxattr(f.c_str(), "user.colour", buf, sizeof buf) == 4);
  CHECK(std::string(buf, 4) == "blue");
  CHECK(::getxattr(f.c_str(), "user.colour", nullptr, 0) == 4);
  CHECK(::getxattr(f.c_str(), "user.colour", buf, 2) == -1);
  CHECK(errno == ERANGE);
  CHECK(::getxattr(f.c_str(), "user.none", buf, sizeof buf) == -1);
  CHECK(errno == ENODATA);
  CHECK(err(::setxattr(f.c_str(), "user.colour", "red", 3, XATTR_CREATE)) == EEXIST);
  CHECK(err(::setxattr(f.c_str(), "user.size", "L", 1, XATTR_REPLACE)) == ENODATA);
  CHECK(err(::setxattr(f.c_str(), "user.size", "L", 1, XATTR_CREATE)) == 0);
  CHECK(err(::setxattr(f.c_str(), "user.empty", "", 0, 0)) == 0);
  const ssize_t n = ::listxattr(f.c_str(), buf, sizeof buf);
  CHECK(std::string(buf, static_cast<std::size_t>(n)) ==
        std::string("user.colour\0user.empty\0user.size\0", 33));
  CHECK(err(::removexattr(f.c_str(), "user.size")) == 0);
  CHECK(err(::removexattr(f.c_str(), "user.size")) == ENODATA);
  const std::string big(65536, 'v');
  CHECK(err(::setxattr(f.c_str(), "user.big", big.data(), big.size(), 0)) == ENOSPC);
  CHECK(err(::setxattr(f.c_str(), "user.mid", big.data(), 60000, 0)) == 0);
  CHECK(err(::setxattr(f.c_str(), "system.posix_acl_access", "x", 1, 0)) != 0);
  CHECK(err(::mkdir((m / "d").c_str(), 0755)) == 0);
  CHECK(err(::setxattr((m / "d").c_str(), "user.dir", "yes", 3, 0)) == 0);
  m.remount();
  CHECK(::getxattr(f.c_str(), "user.colour", buf, sizeof buf) == 4);
  CHECK(::getxattr(f.c_str(), "user.mid", nullptr, 0) == 60000);
  CHECK(::getxattr((m / "d").c_str(), "user.dir", buf, sizeof buf) == 3);
  CHECK(::getxattr(f.c_str(), "user.size", buf, sizeof buf) == -1);
}

TEST_CASE("mount: flock and POSIX locks within one mount", "[mount]") {
  Mount m;
  put(m / "lock", "");
  const int a = ::open((m / "lock").c_str(), O_RDWR);
  const int b = ::open((m / "lock").c_str(), O_RDWR);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  CHECK(::flock(a, LOCK_EX | LOCK_NB) == 0);
  CHECK(::flock(b, LOCK_EX | LOCK_NB) == -1);
  CHECK(errno == EWOULDBLOCK);
  CHECK(::flock(a, LOCK_UN) == 0);
  CHECK(::flock(b, LOCK_SH | LOCK_NB) == 0);
  CHECK(::flock(b, LOCK_UN) == 0);

  struct flock lk {};
  lk.l_type = F_WRLCK;
  lk.l_whence = SEEK_SET;
  lk.l_start = 0;
  lk.l_len = 10;
  CHECK(::fcntl(a, F_SETLK, &lk) == 0);
  // Another process sees the conflict.
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct flock mine = lk;
    const int fd = ::open((m / "lock").c_str(), O_RDWR);
    const int r = ::fcntl(fd, F_SETLK, &mine);
    struct flock probe = lk;
    ::fcntl(fd, F_GETLK, &probe);
    ::_exit(r == -1 && (errno == EAGAIN || errno == EACCES) && probe.l_type == F_WRLCK ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  CHECK(WEXITSTATUS(status) == 0);
  ::close(a);
  ::close(b);
}

TEST_CASE("mount: special files are kept as metadata", "[mount]") {
  Mount m;
  CHECK(err(::mkfifo((m / "fifo").c_str(), 0640)) == 0);
  CHECK(err(::mknod((m / "null").c_str(), S_IFCHR | 0666, makedev(1, 3))) == 0);
  CHECK(err(::mknod((m / "plain").c_str(), S_IFREG | 0600, 0)) == 0);
  CHECK(err(::mkfifo((m / "fifo").c_str(), 0640)) == EEXIST);
  m.remount();
  CHECK(S_ISFIFO(stat_of(m / "fifo").st_mode));
  CHECK((stat_of(m / "fifo").st_mode & 07777) == 0640);
  CHECK(S_ISCHR(stat_of(m / "null").st_mode));
  CHECK(stat_of(m / "null").st_rdev == makedev(1, 3));
  CHECK(S_ISREG(stat_of(m / "plain").st_mode));
}
