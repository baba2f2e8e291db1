// The C interface (splitfs.h): exceptions become status codes and a per-thread message.
#include <splitfs/splitfs.h>
#include <splitfs/client.hpp>

#include <string>

namespace {

thread_local std::string last_error;

template <class F>
splitfs_status guarded(const char* file, F&& f) {
  last_error.clear();
  if (file == nullptr || *file == '\0') {
    last_error = "no file given";
    return SPLITFS_INVALID_ARGUMENT;
  }
  try {
    f(std::string(file));
    return SPLITFS_OK;
  } catch (const splitfs::NotFound& e) {
    last_error = e.what();
    return SPLITFS_NOT_FOUND;
  } catch (const splitfs::IntegrityError& e) {
    last_error = e.what();
    return SPLITFS_INTEGRITY;
  } catch (const splitfs::ServerUnavailable& e) {
    last_error = e.what();
    return SPLITFS_SERVER_UNAVAILABLE;
  } catch (const splitfs::AuthError& e) {
    last_error = e.what();
    return SPLITFS_AUTH;
  } catch (const splitfs::ConfigError& e) {
    last_error = e.what();
    return SPLITFS_CONFIG;
  } catch (const splitfs::LocalIoError& e) {
    last_error = e.what();
    return SPLITFS_LOCAL_IO;
  } catch (const splitfs::MaliciousFileError& e) {
    last_error = e.what();
    return SPLITFS_MALICIOUS;
  } catch (const std::exception& e) {
    last_error = e.what();
    return SPLITFS_ERROR;
  }
}

}  // namespace

extern "C" splitfs_status split_store(const char* file) {
  return guarded(file, [](const std::string& path) { splitfs::split_store(path); });
}

extern "C" splitfs_status split_fetch(const char* file) {
  return guarded(file, [](const std::string& name) { splitfs::split_fetch(name); });
}

extern "C" const char* splitfs_last_error(void) {
  return last_error.c_str();
}
