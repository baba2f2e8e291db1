// A scratch folder for one test (under $TMPDIR, else /tmp, unless told otherwise), removed with
// everything in it when the test is done.
// Header-only, so unit tests use it without the integration tests' support library.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace splitfs::testing {

class TempDir {
 public:
  // Made as parent/prefix-XXXXXX: a test that needs another filesystem (the tmpfs at /dev/shm,
  // say) gives its parent.
  explicit TempDir(const std::string& prefix = "splitfs-test",
                   const std::filesystem::path& parent = std::filesystem::temp_directory_path()) {
    std::string pattern = (parent / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error(std::string("mkdtemp failed: ") + std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace splitfs::testing
