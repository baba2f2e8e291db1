// The client home folder: config.toml (servers, pinned fingerprints, tuning), key (the content key,
// mode 0600, in clear or protected by a passphrase) and identity/ (the client's TLS key and
// certificate, which the servers' operators enrol). Reading it validates everything once, so the
// rest of the library can trust it.
//
// A protected key is one line: "splitfs-key-v1-scrypt:N=<n>,r=<r>,p=<p>:<salt hex>:<sealed hex>",
// the content key sealed (AES-256-GCM, the text before the last colon as associated data) under a
// key derived from the passphrase with scrypt. The same line is what `splitfs key export` writes.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "core/crypto.hpp"
#include "scan/quarantine.hpp"
#include "scan/scan.hpp"
#include "transport/transport.hpp"

namespace splitfs::core {

// The [scan] section: which detectors run, what each verdict does, where blocked files go.
struct ScanConfig {
  scan::Settings settings;
  scan::Policy policy;
  std::filesystem::path quarantine;  // default HOME/quarantine
  std::uint64_t quarantine_max_bytes = scan::Quarantine::kDefaultMaxBytes;
};
// ClamAV's database folder unless the configuration names another: where Debian's freshclam
// keeps the official databases.
inline constexpr const char* kDefaultClamAvDatabase = "/var/lib/clamav";

struct ClientConfig {
  std::filesystem::path home;
  transport::Endpoint https;
  transport::Endpoint tcp;
  // The problem statement's original servers (plain HTTP and raw TCP, no TLS, nothing pinned),
  // reached through the legacy transports.
  bool legacy = false;
  transport::Timeouts timeouts;
  std::uint32_t segment_bytes = 0;
  // The client's TLS identity (HOME/identity, or $SPLITFS_IDENTITY); unset for legacy servers.
  transport::ClientCertificate identity;
  ScanConfig scan;
};

inline constexpr const char* kConfigFile = "config.toml";
inline constexpr const char* kKeyFile = "key";
inline constexpr const char* kIdentityDir = "identity";
// Passphrases for scripts: the current one, and a new one (protect, export), which falls back to
// the current one.
inline constexpr const char* kPassphraseEnvironment = "SPLITFS_PASSPHRASE";
inline constexpr const char* kNewPassphraseEnvironment = "SPLITFS_NEW_PASSPHRASE";
inline constexpr std::size_t kMaxPassphraseBytes = 1024;

// "host:port" or "[v6]:port". Throws ConfigError naming `what`.
transport::Endpoint parse_address(const std::string& kind, const std::string& text);

// Throws splitfs::ConfigError with a message saying what to do.
ClientConfig load_config(const std::filesystem::path& home);
// Only the [scan] section (the defaults when home has no configuration). Throws ConfigError.
ScanConfig load_scan_config(const std::filesystem::path& home);
void save_config(const ClientConfig& config);

// The folder of the client's TLS identity: $SPLITFS_IDENTITY if set, else HOME/identity.
std::filesystem::path identity_dir(const std::filesystem::path& home);

// The content key; a protected key is opened with the passphrase from read_passphrase (asked once
// per process and key: later calls reuse the opened key).
Key load_key(const std::filesystem::path& home);
// Writes the key with mode 0600, atomically; refuses to replace an existing key. A non-empty
// passphrase protects it.
void save_key(const std::filesystem::path& home, const Key& key, std::string_view passphrase = {});

// The key file's line for `key`: in clear for an empty passphrase, else seal_key().
std::string key_text(const Key& key, std::string_view passphrase);
// The protected form of a key (one line, see above); scrypt with fresh salt and nonce.
std::string seal_key(const Key& key, std::string_view passphrase);
bool is_sealed_key(std::string_view text);
// Opens a protected key: nullopt for a wrong passphrase. Throws ConfigError for malformed text or
// parameters outside the bounds this client accepts (which bound the memory and time scrypt takes).
std::optional<Key> open_sealed_key(std::string_view text, std::string_view passphrase);
// The key file's text (one line, no newline). Throws ConfigError if absent or readable by others.
std::string read_key_text(const std::filesystem::path& home);

// A passphrase from the environment (kNewPassphraseEnvironment first when `new_one`, then
// kPassphraseEnvironment), else asked on the terminal without echo (twice when `new_one`). Throws
// ConfigError if neither is available, if the answers differ, or if a new one is empty.
std::string read_passphrase(const std::string& prompt, bool new_one);

// Writes `data` to `path` through a temporary file and rename, with the given mode.
void write_file_atomically(const std::filesystem::path& path, std::string_view data, unsigned mode);

}  // namespace splitfs::core
