#include "fs/mounts.hpp"

#include <catch2/catch.hpp>

using splitfs::fs::parse_mountinfo;

TEST_CASE("mountinfo lines give each mount's device, unescaped path and type") {
  const auto mounts = parse_mountinfo(
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "61 22 0:52 / /mnt/my\\040files rw,nosuid,nodev,relatime shared:30 master:2 - fuse.splitfs "
      "splitfs rw,user_id=0,group_id=0\n"
      "62 22 0:53 / /mnt/back\\134slash rw - tmpfs tmpfs rw\n");
  REQUIRE(mounts.size() == 3);
  CHECK(mounts[0].device == "8:1");
  CHECK(mounts[0].where == "/");
  CHECK(mounts[0].type == "ext4");
  CHECK(mounts[1].device == "0:52");
  CHECK(mounts[1].where == "/mnt/my files");
  CHECK(mounts[1].type == "fuse.splitfs");
  CHECK(mounts[2].where == "/mnt/back\\slash");
}

TEST_CASE("mountinfo lines without a separator or a device are skipped") {
  const auto mounts = parse_mountinfo(
      "\n"
      "garbage\n"
      "23 1 8:1 / /a rw shared:1 ext4 /dev/sda1 rw\n"  // no " - "
      "24 1 nodevice / /b rw - ext4 /dev/sda1 rw\n"
      "25 1 0:9 / /c rw -\n"  // separator, no type
      "26 1 0:10 / /d\\04 rw - proc proc rw\n");
  REQUIRE(mounts.size() == 1);
  CHECK(mounts[0].where == "/d\\04");  // a short escape is kept as it is
  CHECK(mounts[0].type == "proc");
}

TEST_CASE("read-ahead is only set on a device named as major:minor") {
  using splitfs::fs::set_readahead_kib;
  for (const char* device : {"", ":", "0:", ":5", "../../x", "0:5/../../y", "0:5:6", "a:b"})
    CHECK(set_readahead_kib(device, 1024) == std::errc::invalid_argument);
}
