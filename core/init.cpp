// splitfs::init: writes a client home. Fingerprints are pinned as given, or, only when the user
// asks for trust on first use, as the servers present them now. The original (legacy) servers
// have nothing to pin; the result carries a warning saying what does not hold for them.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <cstring>
#include <fstream>
#include <splitfs/client.hpp>

#include "core/config.hpp"
#include "core/manifest.hpp"
#include "tls/identity.hpp"

namespace splitfs {

namespace fs = std::filesystem;

namespace {

constexpr const char* kLegacyWarning =
    "warning: these are the problem statement's original servers, so some guarantees do not hold:\n"
    "  - no TLS: traffic is in the clear and nothing proves which server answers (content and\n"
    "    names stay encrypted; object sizes, and which objects you read and write, are visible)\n"
    "  - no authentication: anyone who reaches a server can read, replace or add objects\n"
    "    (changes are detected when you fetch, not prevented)\n"
    "  - no delete: 'rm' hides a file, but its encrypted data stays on the servers\n"
    "  - one writer at a time: the file catalog is updated by read-modify-write, so two clients\n"
    "    storing at once can lose each other's listing entries\n"
    "Content is still encrypted and authenticated here: altered data fails the fetch.";

// The original HTTP server's address is often written as a URL.
std::string legacy_address(std::string text) {
  if (text.starts_with("http://"))
    text.erase(0, 7);
  while (!text.empty() && text.back() == '/')
    text.pop_back();
  if (text.find("://") != std::string::npos) {
    throw ConfigError(
        "the original HTTP server speaks plain HTTP: give http://HOST:PORT or "
        "HOST:PORT");
  }
  return text;
}

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

std::string identity_fingerprint(const fs::path& home) {
  try {
    return tls::load_or_create_client_identity(core::identity_dir(home)).fingerprint;
  } catch (const tls::TlsError& e) {
    throw ConfigError(std::string("this client's identity: ") + e.what());
  }
}

// Wipes a key when it goes out of scope.
struct KeyHolder {
  core::Key key{};
  ~KeyHolder() { OPENSSL_cleanse(key.data(), key.size()); }
};

void write_new_file(const fs::path& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    throw LocalIoError("cannot create " + path.string() + ": " + std::strerror(errno) +
                       (errno == EEXIST ? " (not replacing an existing file)" : ""));
  }
  bool ok = true;
  for (std::size_t done = 0; ok && done < text.size();) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    ok = n > 0;
    if (ok)
      done += static_cast<std::size_t>(n);
  }
  ok = ::fsync(fd) == 0 && ok;
  ok = ::close(fd) == 0 && ok;
  if (!ok) {
    ::unlink(path.c_str());
    throw LocalIoError("cannot write " + path.string());
  }
}

}  // namespace

InitResult init(const fs::path& home, const InitOptions& options) {
  core::ClientConfig config;
  config.home = home;
  config.segment_bytes = core::kDefaultSegmentBytes;
  config.legacy = options.legacy;
  config.https =
      core::parse_address("HTTPS", options.legacy ? legacy_address(options.https) : options.https);
  config.tcp = core::parse_address("TCP", options.tcp);
  if (options.legacy && (!options.https_fingerprint.empty() || !options.tcp_fingerprint.empty()))
    throw ConfigError("the original servers have no TLS: there is no fingerprint to pin");

  std::error_code ec;
  fs::create_directories(home, ec);
  if (ec || ::chmod(home.c_str(), 0700) != 0) {
    throw LocalIoError("cannot create the client home " + home.string());
  }
  if (fs::exists(home / core::kConfigFile) && !options.force) {
    throw ConfigError(home.string() + " is already configured; pass --force to replace it");
  }
  if (!options.legacy) {
    config.https.fingerprint = pinned_fingerprint(config.https, options.https_fingerprint,
                                                  options.accept_new, config.timeouts);
    config.tcp.fingerprint = pinned_fingerprint(config.tcp, options.tcp_fingerprint,
                                                options.accept_new, config.timeouts);
  }

  InitResult result;
  result.home = home;
  result.https_fingerprint = config.https.fingerprint;
  result.tcp_fingerprint = config.tcp.fingerprint;
  if (options.legacy)
    result.warning = kLegacyWarning;
  else
    result.client_fingerprint = identity_fingerprint(home);
  const fs::path key = home / core::kKeyFile;
  if (options.new_key && fs::exists(key)) {
    if (!options.force)
      throw ConfigError("replacing the content key needs --force");
    // Files stored under the old key cannot be read without it: keep it beside the new one.
    fs::rename(key, home / (std::string(core::kKeyFile) + ".old"));
  }
  if (!fs::exists(key)) {
    core::save_key(home, core::random_key(), options.key_passphrase);
    result.key_created = true;
  }
  core::save_config(config);
  return result;
}

std::string client_fingerprint(const fs::path& home) {
  std::error_code ec;
  if (!fs::exists(home, ec)) {
    fs::create_directories(home, ec);
    if (ec || ::chmod(home.c_str(), 0700) != 0)
      throw LocalIoError("cannot create the client home " + home.string());
  }
  return identity_fingerprint(home);
}

bool key_is_protected(const fs::path& home) {
  return core::is_sealed_key(core::read_key_text(home));
}

void unlock_key(const fs::path& home) {
  KeyHolder holder;
  holder.key = core::load_key(home);
}

void set_key_passphrase(const fs::path& home, const std::string& new_passphrase) {
  KeyHolder holder;
  holder.key = core::load_key(home);
  std::string text = core::key_text(holder.key, new_passphrase) + "\n";
  core::write_file_atomically(home / core::kKeyFile, text, 0600);
  OPENSSL_cleanse(text.data(), text.size());
}

void export_key(const fs::path& home, const fs::path& file, const std::string& passphrase) {
  KeyHolder holder;
  holder.key = core::load_key(home);
  write_new_file(file, core::seal_key(holder.key, passphrase) + "\n");
}

void import_key(const fs::path& home, const fs::path& file, const std::string& passphrase,
                bool keep_protected, bool replace) {
  std::ifstream in(file, std::ios::binary);
  if (!in)
    throw LocalIoError("cannot read " + file.string());
  std::string text(1025, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  if (!core::is_sealed_key(text))
    throw ConfigError(file.string() + " is not a key written by 'splitfs key export'");
  KeyHolder imported;
  const std::optional<core::Key> opened = core::open_sealed_key(text, passphrase);
  if (!opened)
    throw ConfigError("wrong passphrase for " + file.string());
  imported.key = *opened;

  std::error_code ec;
  fs::create_directories(home, ec);
  if (ec || ::chmod(home.c_str(), 0700) != 0)
    throw LocalIoError("cannot create the client home " + home.string());
  const fs::path key = home / core::kKeyFile;
  if (fs::exists(key)) {
    KeyHolder existing;
    existing.key = core::load_key(home);
    if (existing.key != imported.key) {
      if (!replace) {
        throw ConfigError(key.string() +
                          " holds another key; pass --force to replace it (it is kept as " +
                          core::kKeyFile + ".old)");
      }
      fs::rename(key, home / (std::string(core::kKeyFile) + ".old"));
    }
  }
  std::string content = (keep_protected ? text : core::key_text(imported.key, {})) + "\n";
  core::write_file_atomically(key, content, 0600);
  OPENSSL_cleanse(content.data(), content.size());
}

std::string read_passphrase(const std::string& prompt, bool new_one) {
  return core::read_passphrase(prompt, new_one);
}

}  // namespace splitfs
