#include "tests/support/servers.hpp"

#if !defined(SPLITFS_BIN_DIR) || !defined(SPLITFS_SOURCE_DIR)
#error \
    "SPLITFS_BIN_DIR and SPLITFS_SOURCE_DIR must name the built programs' folder and the source tree"
#endif

namespace splitfs::testing {

const std::string& bin_dir() {
  static const std::string dir = SPLITFS_BIN_DIR;
  return dir;
}

const std::string& source_dir() {
  static const std::string dir = SPLITFS_SOURCE_DIR;
  return dir;
}

}  // namespace splitfs::testing
