#include "fs/mounts.hpp"

#include <fcntl.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "common/bytes.hpp"
#include "common/fd.hpp"

namespace splitfs::fs {

namespace {

// Blanks and backslashes in a mountinfo path are octal escapes ("\040" for a space).
std::string unescape(std::string_view field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && field.size() - i > 3) {
      const std::string_view code = field.substr(i + 1, 3);
      if (code.find_first_not_of("01234567") == std::string_view::npos) {
        out.push_back(
            static_cast<char>(((code[0] - '0') << 6) | ((code[1] - '0') << 3) | (code[2] - '0')));
        i += 3;
        continue;
      }
    }
    out.push_back(field[i]);
  }
  return out;
}

}  // namespace

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  // "36 35 98:0 /root /mnt/point rw,noatime [optional fields...] - ext4 /dev/sda1 rw"
  std::vector<MountEntry> out;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> fields;
    for (std::string w; words >> w;)
      fields.push_back(std::move(w));
    std::size_t dash = 6;
    while (dash < fields.size() && fields[dash] != "-")
      ++dash;
    if (dash + 1 >= fields.size() || fields[2].find(':') == std::string::npos)
      continue;
    out.push_back({fields[2], unescape(fields[4]), fields[dash + 1]});
  }
  return out;
}

std::vector<MountEntry> read_mounts() {
  std::ifstream in("/proc/self/mountinfo");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_mountinfo(text.str());
}

bool is_mount_point(const std::filesystem::path& path) {
  for (const MountEntry& m : read_mounts()) {
    if (m.where == path)
      return true;
  }
  return false;
}

std::error_code set_readahead_kib(const std::string& device, std::size_t kib) {
  // The device comes from the kernel's own table, but it names a path: keep it to "digits:digits".
  const auto colon = device.find(':');
  if (colon == 0 || colon == std::string::npos || colon + 1 == device.size() ||
      device.find_first_not_of("0123456789:") != std::string::npos ||
      device.find(':', colon + 1) != std::string::npos) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  const std::string path = "/sys/class/bdi/" + device + "/read_ahead_kb";
  const Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  const std::string value = std::to_string(kib) + "\n";
  if (const ByteView bytes = as_bytes(value);
      !fd || !write_fully(fd.get(), bytes.data(), bytes.size()))
    return {errno, std::system_category()};
  return {};
}

}  // namespace splitfs::fs
