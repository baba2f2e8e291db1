// splitfs::init: writes a client home. Fingerprints are pinned as given, or, only when the user
// asks for trust on first use, as the servers present them now.
#include <sys/stat.h>

#include <splitfs/client.hpp>

#include "core/config.hpp"
#include "core/manifest.hpp"

namespace splitfs {

namespace fs = std::filesystem;

namespace {

std::string pinned_fingerprint(const transport::Endpoint& endpoint, const std::string& given,
                               bool accept_new, const transport::Timeouts& timeouts) {
  if (!given.empty()) {
    if (given.rfind("SHA256:", 0) != 0 || given.size() != 7 + 64 || !from_hex(given.substr(7))) {
      throw ConfigError(endpoint.kind + " fingerprint must look like SHA256:<64 hex digits>");
    }
    std::string lower = given;
    for (char& c : lower)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    lower.replace(0, 6, "SHA256");
    return lower;
  }
  if (!accept_new) {
    throw ConfigError("no fingerprint given for the " + endpoint.kind +
                      " server: pass the one it printed at start-up, or --accept-new to trust "
                      "whatever it presents now");
  }
  return transport::probe_fingerprint(endpoint.kind, endpoint.host, endpoint.port,
                                      timeouts.connect);
}

}  // namespace

InitResult init(const fs::path& home, const InitOptions& options) {
  core::ClientConfig config;
  config.home = home;
  config.segment_bytes = core::kDefaultSegmentBytes;
  config.https = core::parse_address("HTTPS", options.https);
  config.tcp = core::parse_address("TCP", options.tcp);

  std::error_code ec;
  fs::create_directories(home, ec);
  if (ec || ::chmod(home.c_str(), 0700) != 0) {
    throw LocalIoError("cannot create the client home " + home.string());
  }
  if (fs::exists(home / core::kConfigFile) && !options.force) {
    throw ConfigError(home.string() + " is already configured; pass --force to replace it");
  }
  config.https.fingerprint = pinned_fingerprint(config.https, options.https_fingerprint,
                                                options.accept_new, config.timeouts);
  config.tcp.fingerprint =
      pinned_fingerprint(config.tcp, options.tcp_fingerprint, options.accept_new, config.timeouts);

  InitResult result;
  result.home = home;
  result.https_fingerprint = config.https.fingerprint;
  result.tcp_fingerprint = config.tcp.fingerprint;
  const fs::path key = home / core::kKeyFile;
  if (options.new_key && fs::exists(key)) {
    if (!options.force)
      throw ConfigError("replacing the content key needs --force");
    // Files stored under the old key cannot be read without it: keep it beside the new one.
    fs::rename(key, home / (std::string(core::kKeyFile) + ".old"));
  }
  if (!fs::exists(key)) {
    core::save_key(home, core::random_key());
    result.key_created = true;
  }
  core::save_config(config);
  return result;
}

}  // namespace splitfs
