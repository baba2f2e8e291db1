// The mount table (/proc/self/mountinfo) as data: where each filesystem is mounted, of what type,
// on which device; and the kernel's read-ahead for a mounted filesystem (its sysfs "bdi"). The
// table's parsing is a pure function of the file's text.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace splitfs::fs {

// The FUSE subtype the mount gives itself, and the type the mount table then shows.
inline constexpr std::string_view kMountSubtype = "splitfs";
inline constexpr std::string_view kMountType = "fuse.splitfs";
static_assert(kMountType.substr(0, 5) == "fuse." && kMountType.substr(5) == kMountSubtype);

struct MountEntry {
  std::string device;           // "major:minor"
  std::filesystem::path where;  // the mount point, unescaped
  std::string type;             // e.g. "fuse.splitfs"
};

// The lines of a mountinfo file, in order; lines that do not parse are skipped.
std::vector<MountEntry> parse_mountinfo(std::string_view text);

// This process's mount table; empty if /proc is not readable.
std::vector<MountEntry> read_mounts();

bool is_mount_point(const std::filesystem::path& path);

// Sets how far ahead the kernel reads sequential files of the filesystem on device (a MountEntry's
// "major:minor"). The kernel gives a FUSE mount 128 KiB, so a large read reaches the mount as
// 256 KiB requests however large max_read is. Needs root.
std::error_code set_readahead_kib(const std::string& device, std::size_t kib);

}  // namespace splitfs::fs
