#include "service/server_main.hpp"

#ifndef SPLITFS_DEFAULT_DATA_ROOT
#error "SPLITFS_DEFAULT_DATA_ROOT must name the default folder for server data"
#endif

namespace splitfs::service {

std::string default_data_root() {
  return SPLITFS_DEFAULT_DATA_ROOT;
}

}  // namespace splitfs::service
