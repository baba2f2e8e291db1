#include "core/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <toml++/toml.h>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <splitfs/errors.hpp>
#include <sstream>
#include <vector>

#include "core/manifest.hpp"
#include "tls/identity.hpp"

namespace splitfs::core {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kKeyPrefix = "splitfs-key-v1:";
constexpr std::string_view kSealedPrefix = "splitfs-key-v1-scrypt:";
// scrypt cost for new protections: 128 MiB and about half a second, as OWASP recommends.
constexpr std::uint64_t kScryptN = 1u << 17;
constexpr std::uint32_t kScryptR = 8;
constexpr std::uint32_t kScryptP = 1;
// What this client accepts when opening a key: bounds the memory and time a crafted file can cost.
constexpr std::uint64_t kMaxScryptN = 1u << 20;
constexpr std::uint32_t kMaxScryptR = 32;
constexpr std::uint32_t kMaxScryptP = 16;
constexpr std::uint64_t kMaxScryptMemory = 1u << 30;
constexpr std::size_t kSaltBytes = 16;

struct KdfDeleter {
  void operator()(EVP_KDF* kdf) const { EVP_KDF_free(kdf); }
  void operator()(EVP_KDF_CTX* ctx) const { EVP_KDF_CTX_free(ctx); }
};

// Wipes a secret when it goes out of scope.
template <class T>
struct Wiped {
  T value{};
  Wiped() = default;
  explicit Wiped(T v) : value(std::move(v)) {}
  Wiped(const Wiped&) = delete;
  Wiped& operator=(const Wiped&) = delete;
  ~Wiped() { OPENSSL_cleanse(value.data(), value.size()); }
};

struct ScryptParams {
  std::uint64_t n = kScryptN;
  std::uint32_t r = kScryptR;
  std::uint32_t p = kScryptP;
};

Key scrypt(std::string_view passphrase, ByteView salt, const ScryptParams& params) {
  std::unique_ptr<EVP_KDF, KdfDeleter> kdf(EVP_KDF_fetch(nullptr, "SCRYPT", nullptr));
  std::unique_ptr<EVP_KDF_CTX, KdfDeleter> ctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  if (!ctx)
    throw Error("OpenSSL offers no scrypt");
  std::uint64_t n = params.n;
  std::uint32_t r = params.r;
  std::uint32_t p = params.p;
  std::uint64_t maxmem = kMaxScryptMemory + (1u << 20);
  const OSSL_PARAM ossl_params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD,
                                        const_cast<char*>(passphrase.data()), passphrase.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<std::uint8_t*>(salt.data()),
                                        salt.size()),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &r),
      OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &p),
      OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem),
      OSSL_PARAM_construct_end(),
  };
  Key out{};
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), ossl_params) != 1)
    throw Error("scrypt failed (out of memory?)");
  return out;
}

// Parses "<name><decimal>" followed by `end` (or the end of the text), consuming it.
template <class T>
bool take_field(std::string_view& text, std::string_view name, char end, T& value) {
  if (!text.starts_with(name))
    return false;
  text.remove_prefix(name.size());
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{})
    return false;
  text.remove_prefix(static_cast<std::size_t>(ptr - text.data()));
  if (end == '\0')
    return text.empty();
  if (!text.starts_with(end))
    return false;
  text.remove_prefix(1);
  return true;
}

// "N=<n>,r=<r>,p=<p>" within this client's bounds.
std::optional<ScryptParams> parse_params(std::string_view text) {
  ScryptParams params;
  if (!take_field(text, "N=", ',', params.n) || !take_field(text, "r=", ',', params.r) ||
      !take_field(text, "p=", '\0', params.p)) {
    return std::nullopt;
  }
  const bool power_of_two = params.n >= 2 && (params.n & (params.n - 1)) == 0;
  if (!power_of_two || params.n > kMaxScryptN || params.r == 0 || params.r > kMaxScryptR ||
      params.p == 0 || params.p > kMaxScryptP || 128u * params.n * params.r > kMaxScryptMemory) {
    return std::nullopt;
  }
  return params;
}

// Keys opened with a passphrase in this process, by their protected text: a process that opens
// several Clients on one home (the mount does) asks once.
class OpenedKeys {
 public:
  ~OpenedKeys() {
    for (auto& [text, key] : keys_)
      OPENSSL_cleanse(key.data(), key.size());
  }
  std::optional<Key> find(const std::string& text) {
    std::lock_guard lock(mutex_);
    const auto it = keys_.find(text);
    return it == keys_.end() ? std::nullopt : std::optional<Key>(it->second);
  }
  void add(const std::string& text, const Key& key) {
    std::lock_guard lock(mutex_);
    keys_[text] = key;
  }
  std::mutex& asking() { return asking_; }

 private:
  std::mutex mutex_;
  std::mutex asking_;  // one prompt at a time
  std::map<std::string, Key> keys_;
};

OpenedKeys& opened_keys() {
  static OpenedKeys keys;
  return keys;
}

class Terminal {
 public:
  Terminal() : fd_(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY)) {}
  ~Terminal() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;
  bool available() const { return fd_ >= 0; }

  // One line typed without echo, at most kMaxPassphraseBytes. Echo goes off before the prompt
  // shows (TCSAFLUSH drops anything typed ahead), so what is typed after it is never discarded.
  std::string ask(const std::string& prompt) {
    termios saved{};
    const bool restore = ::tcgetattr(fd_, &saved) == 0;
    if (restore) {
      termios quiet = saved;
      quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
      quiet.c_lflag |= ECHONL;
      ::tcsetattr(fd_, TCSAFLUSH, &quiet);
    }
    write(prompt);
    std::string line;
    char c = 0;
    bool too_long = false;
    for (;;) {
      const ssize_t n = ::read(fd_, &c, 1);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0 || c == '\n')
        break;
      if (line.size() < kMaxPassphraseBytes)
        line.push_back(c);
      else
        too_long = true;
    }
    if (restore)
      ::tcsetattr(fd_, TCSAFLUSH, &saved);
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (too_long) {
      OPENSSL_cleanse(line.data(), line.size());
      throw ConfigError("a passphrase is limited to " + std::to_string(kMaxPassphraseBytes) +
                        " bytes");
    }
    return line;
  }

 private:
  void write(const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return;
      done += static_cast<std::size_t>(n);
    }
  }

  int fd_;
};

std::optional<std::string> passphrase_from_environment(bool new_one) {
  for (const char* name : {new_one ? kNewPassphraseEnvironment : nullptr, kPassphraseEnvironment}) {
    if (name == nullptr)
      continue;
    if (const char* value = std::getenv(name); value != nullptr && *value != '\0') {
      std::string text(value);
      if (text.size() > kMaxPassphraseBytes)
        throw ConfigError(std::string(name) + " is longer than " +
                          std::to_string(kMaxPassphraseBytes) + " bytes");
      return text;
    }
  }
  return std::nullopt;
}

std::string read_small_file(const fs::path& path, std::size_t max) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ConfigError("cannot read " + path.string());
  std::string data(max + 1, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data.size()));
  if (static_cast<std::size_t>(in.gcount()) > max)
    throw ConfigError(path.string() + " is too large");
  data.resize(static_cast<std::size_t>(in.gcount()));
  return data;
}

transport::Endpoint read_server(const toml::table& root, const std::string& key,
                                const std::string& kind, const fs::path& file, bool legacy) {
  const auto* server = root["servers"][key].as_table();
  if (!server)
    throw ConfigError(file.string() + ": missing [servers." + key + "]");
  auto address = (*server)["address"].value<std::string>();
  auto fingerprint = (*server)["fingerprint"].value<std::string>();
  if (legacy) {
    if (!address)
      throw ConfigError(file.string() + ": [servers." + key + "] needs an address");
    if (fingerprint) {
      throw ConfigError(file.string() + ": [servers." + key +
                        "] has a fingerprint, but legacy servers have no TLS to pin");
    }
    return parse_address(kind, *address);
  }
  if (!address || !fingerprint) {
    throw ConfigError(file.string() + ": [servers." + key + "] needs address and fingerprint");
  }
  transport::Endpoint endpoint = parse_address(kind, *address);
  if (fingerprint->rfind("SHA256:", 0) != 0 || fingerprint->size() != 7 + 64 ||
      !from_hex(fingerprint->substr(7))) {
    throw ConfigError(file.string() + ": [servers." + key +
                      "] fingerprint must be SHA256:<64 hex>");
  }
  endpoint.fingerprint = *fingerprint;
  return endpoint;
}

// A path from the configuration: ~ and relative paths are taken from the client home.
fs::path config_path(const fs::path& home, const std::string& text) {
  if (text.starts_with("~/")) {
    if (const char* user_home = std::getenv("HOME"); user_home && *user_home)
      return fs::path(user_home) / text.substr(2);
  }
  const fs::path path(text);
  return path.is_absolute() ? path : home / path;
}

ScanConfig read_scan(const toml::table& root, const fs::path& home, const fs::path& file) {
  ScanConfig config;
  config.quarantine = home / "quarantine";
  config.settings.clamav_database = kDefaultClamAvDatabase;
  const auto* scan = root["scan"].as_table();
  if (!scan)
    return config;
  const auto bad = [&file](const std::string& what) {
    return ConfigError(file.string() + ": scan." + what);
  };
  for (const char* key : {"suspicious", "malicious"}) {
    if (const auto text = (*scan)[key].value<std::string>()) {
      const auto action = scan::parse_action(*text);
      if (!action)
        throw bad(std::string(key) + " must be \"block\", \"warn\" or \"allow\"");
      scan::Action& slot = std::string_view(key) == "suspicious" ? config.policy.suspicious
                                                                 : config.policy.malicious;
      slot = *action;
    }
  }
  if (const auto* dirs = (*scan)["yara_rules"].as_array()) {
    for (const auto& dir : *dirs) {
      const auto text = dir.value<std::string>();
      if (!text || text->empty())
        throw bad("yara_rules must be a list of folders");
      config.settings.yara_rule_dirs.push_back(config_path(home, *text));
    }
  } else if ((*scan)["yara_rules"]) {
    throw bad("yara_rules must be a list of folders");
  }
  config.settings.bundled_yara_rules =
      (*scan)["bundled_rules"].value_or(config.settings.bundled_yara_rules);
  if (const auto text = (*scan)["clamav_database"].value<std::string>())
    config.settings.clamav_database = text->empty() ? fs::path() : config_path(home, *text);
  if (const auto text = (*scan)["quarantine"].value<std::string>()) {
    if (text->empty())
      throw bad("quarantine must name a folder");
    config.quarantine = config_path(home, *text);
  }
  const auto positive = [&](const char* key, auto& value) {
    if (const auto node = (*scan)[key]; node) {
      const auto number = node.value<std::int64_t>();
      if (!number || *number <= 0)
        throw bad(std::string(key) + " must be a positive number");
      value = static_cast<std::remove_reference_t<decltype(value)>>(*number);
    }
  };
  scan::Limits& limits = config.settings.limits;
  positive("quarantine_max_bytes", config.quarantine_max_bytes);
  positive("clamav_max_bytes", config.settings.clamav_max_bytes);
  positive("max_archive_depth", limits.max_depth);
  positive("max_expansion_ratio", limits.max_ratio);
  positive("max_expanded_bytes", limits.max_expanded);
  if (limits.max_depth > 64)
    throw bad("max_archive_depth is at most 64");
  return config;
}

}  // namespace

transport::Endpoint parse_address(const std::string& kind, const std::string& text) {
  std::string host;
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      throw ConfigError(kind + " address '" + text + "' is not [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      throw ConfigError(kind + " address '" + text + "' is not HOST:PORT");
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || end != port_text.data() + port_text.size() || port == 0 ||
      port > 65535 || host.empty()) {
    throw ConfigError(kind + " address '" + text + "' has no valid port (1-65535)");
  }
  transport::Endpoint endpoint;
  endpoint.kind = kind;
  endpoint.host = host;
  endpoint.port = static_cast<std::uint16_t>(port);
  return endpoint;
}

ClientConfig load_config(const fs::path& home) {
  const fs::path file = home / kConfigFile;
  if (!fs::exists(file)) {
    throw ConfigError("no splitfs configuration in " + home.string() +
                      " - run 'splitfs init --https HOST:PORT --tcp HOST:PORT' first");
  }
  toml::table root;
  try {
    root = toml::parse(read_small_file(file, 64 << 10), file.string());
  } catch (const toml::parse_error& e) {
    std::ostringstream message;
    message << file.string() << ":" << e.source().begin.line << ": " << e.description();
    throw ConfigError(message.str());
  }
  ClientConfig config;
  config.home = home;
  config.legacy = root["servers"]["legacy"].value_or(false);
  config.https = read_server(root, "https", "HTTPS", file, config.legacy);
  config.tcp = read_server(root, "tcp", "TCP", file, config.legacy);
  config.segment_bytes = root["storage"]["segment_bytes"].value_or(kDefaultSegmentBytes);
  if (config.segment_bytes == 0 || config.segment_bytes > kMaxSegmentBytes ||
      config.segment_bytes % (kChunkBytes * kServers) != 0) {
    throw ConfigError(file.string() + ": storage.segment_bytes must be a multiple of " +
                      std::to_string(kChunkBytes * kServers) + " up to " +
                      std::to_string(kMaxSegmentBytes));
  }
  config.timeouts.connect =
      std::chrono::milliseconds(root["network"]["connect_timeout_ms"].value_or(3000));
  config.timeouts.idle =
      std::chrono::milliseconds(root["network"]["idle_timeout_ms"].value_or(15000));
  config.scan = read_scan(root, home, file);
  if (!config.legacy) {
    const fs::path dir = identity_dir(home);
    config.identity.cert_file = (dir / "cert.pem").string();
    config.identity.key_file = (dir / "key.pem").string();
    std::error_code ec;
    if (!fs::exists(config.identity.cert_file, ec) || !fs::exists(config.identity.key_file, ec)) {
      throw ConfigError("this client has no identity yet (" + dir.string() +
                        "): run 'splitfs id' to create it, then have its fingerprint enrolled on "
                        "both servers");
    }
  }
  return config;
}

ScanConfig load_scan_config(const fs::path& home) {
  const fs::path file = home / kConfigFile;
  std::error_code ec;
  if (!fs::exists(file, ec))
    return read_scan(toml::table{}, home, file);
  try {
    return read_scan(toml::parse(read_small_file(file, 64 << 10), file.string()), home, file);
  } catch (const toml::parse_error& e) {
    std::ostringstream message;
    message << file.string() << ":" << e.source().begin.line << ": " << e.description();
    throw ConfigError(message.str());
  }
}

fs::path identity_dir(const fs::path& home) {
  if (const char* dir = std::getenv(tls::kIdentityEnvironment); dir != nullptr && *dir != '\0')
    return dir;
  return home / kIdentityDir;
}

void save_config(const ClientConfig& config) {
  auto server = [&config](const transport::Endpoint& e) {
    if (config.legacy)
      return toml::table{{"address", e.address()}};
    return toml::table{{"address", e.address()}, {"fingerprint", e.fingerprint}};
  };
  toml::table servers{{"https", server(config.https)}, {"tcp", server(config.tcp)}};
  if (config.legacy)
    servers.insert("legacy", true);
  toml::table root{
      {"servers", std::move(servers)},
      {"storage", toml::table{{"segment_bytes", static_cast<std::int64_t>(config.segment_bytes)}}},
      {"network",
       toml::table{
           {"connect_timeout_ms", static_cast<std::int64_t>(config.timeouts.connect.count())},
           {"idle_timeout_ms", static_cast<std::int64_t>(config.timeouts.idle.count())}}},
  };
  std::ostringstream out;
  out << "# splitfs client configuration (written by 'splitfs init')\n" << root << "\n";
  write_file_atomically(config.home / kConfigFile, out.str(), 0644);
}

std::string read_key_text(const fs::path& home) {
  const fs::path file = home / kKeyFile;
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    throw ConfigError("no content key at " + file.string() + " - run 'splitfs init' first");
  }
  if ((st.st_mode & 077) != 0) {
    throw ConfigError(file.string() + " is readable by others; run 'chmod 600 " + file.string() +
                      "'");
  }
  std::string text = read_small_file(file, 1024);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  return text;
}

Key load_key(const fs::path& home) {
  const fs::path file = home / kKeyFile;
  Wiped<std::string> text(read_key_text(home));
  if (is_sealed_key(text.value)) {
    OpenedKeys& opened = opened_keys();
    std::lock_guard asking(opened.asking());
    if (std::optional<Key> key = opened.find(text.value))
      return *key;
    Wiped<std::string> passphrase(
        read_passphrase("Passphrase of the splitfs key in " + home.string() + ": ", false));
    const std::optional<Key> key = open_sealed_key(text.value, passphrase.value);
    if (!key)
      throw ConfigError("wrong passphrase for " + file.string());
    opened.add(text.value, *key);
    return *key;
  }
  std::optional<Bytes> bytes;
  if (text.value.starts_with(kKeyPrefix))
    bytes = from_hex(std::string_view(text.value).substr(kKeyPrefix.size()));
  if (!bytes || bytes->size() != kKeyBytes)
    throw ConfigError(file.string() + " is not a splitfs key");
  Key key{};
  std::copy(bytes->begin(), bytes->end(), key.begin());
  OPENSSL_cleanse(bytes->data(), bytes->size());
  return key;
}

void save_key(const fs::path& home, const Key& key, std::string_view passphrase) {
  const fs::path file = home / kKeyFile;
  if (fs::exists(file))
    throw ConfigError(file.string() + " already exists; not replacing a key");
  Wiped<std::string> text(key_text(key, passphrase) + "\n");
  write_file_atomically(file, text.value, 0600);
}

std::string key_text(const Key& key, std::string_view passphrase) {
  return passphrase.empty() ? std::string(kKeyPrefix) + to_hex(key) : seal_key(key, passphrase);
}

std::string seal_key(const Key& key, std::string_view passphrase) {
  if (passphrase.empty())
    throw ConfigError("an empty passphrase protects nothing");
  const ScryptParams params;
  std::array<std::uint8_t, kSaltBytes> salt{};
  random_bytes(salt);
  const std::string header = std::string(kSealedPrefix) + "N=" + std::to_string(params.n) +
                             ",r=" + std::to_string(params.r) + ",p=" + std::to_string(params.p) +
                             ":" + to_hex(salt);
  Wiped<Key> wrapping(scrypt(passphrase, salt, params));
  const Bytes sealed = seal_record(wrapping.value, as_bytes(header), key);
  return header + ":" + to_hex(sealed);
}

bool is_sealed_key(std::string_view text) {
  return text.starts_with(kSealedPrefix);
}

std::optional<Key> open_sealed_key(std::string_view text, std::string_view passphrase) {
  const auto malformed = [] { return ConfigError("not a protected splitfs key"); };
  if (!is_sealed_key(text))
    throw malformed();
  const std::size_t salt_colon = text.find(':', kSealedPrefix.size());
  const std::size_t sealed_colon =
      salt_colon == std::string_view::npos ? salt_colon : text.find(':', salt_colon + 1);
  if (sealed_colon == std::string_view::npos)
    throw malformed();
  const std::optional<ScryptParams> params =
      parse_params(text.substr(kSealedPrefix.size(), salt_colon - kSealedPrefix.size()));
  if (!params)
    throw ConfigError(
        "a protected splitfs key with scrypt parameters outside what this client "
        "accepts");
  const std::optional<Bytes> salt =
      from_hex(text.substr(salt_colon + 1, sealed_colon - salt_colon - 1));
  const std::optional<Bytes> sealed = from_hex(text.substr(sealed_colon + 1));
  if (!salt || salt->size() < 8 || salt->size() > 64 || !sealed || sealed->size() > 256)
    throw malformed();
  Wiped<Key> wrapping(scrypt(passphrase, *salt, *params));
  Wiped<Bytes> plain;
  if (!open_record(wrapping.value, as_bytes(text.substr(0, sealed_colon)), *sealed, plain.value))
    return std::nullopt;
  if (plain.value.size() != kKeyBytes)
    throw malformed();
  Key key{};
  std::copy(plain.value.begin(), plain.value.end(), key.begin());
  return key;
}

std::string read_passphrase(const std::string& prompt, bool new_one) {
  if (std::optional<std::string> given = passphrase_from_environment(new_one)) {
    return *given;
  }
  Terminal terminal;
  if (!terminal.available()) {
    throw ConfigError(std::string("a passphrase is needed: set ") +
                      (new_one ? kNewPassphraseEnvironment : kPassphraseEnvironment) +
                      " or run on a terminal");
  }
  std::string passphrase = terminal.ask(prompt);
  if (new_one) {
    Wiped<std::string> again(terminal.ask("Again, to confirm: "));
    if (again.value != passphrase) {
      OPENSSL_cleanse(passphrase.data(), passphrase.size());
      throw ConfigError("the two passphrases differ");
    }
    if (passphrase.empty())
      throw ConfigError("an empty passphrase protects nothing");
  }
  return passphrase;
}

void write_file_atomically(const fs::path& path, std::string_view data, unsigned mode) {
  std::string tmp = (path.parent_path() / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0)
    throw LocalIoError("cannot create a file in " + path.parent_path().string());
  bool ok = ::fchmod(fd, static_cast<mode_t>(mode)) == 0;
  for (std::size_t done = 0; ok && done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    ok = n > 0;
    if (ok)
      done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    throw LocalIoError("cannot write " + path.string());
  }
}

}  // namespace splitfs::core
