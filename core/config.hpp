// The client home folder: config.toml (servers, pinned fingerprints, tuning) and key (the content
// key, mode 0600). Reading it validates everything once, so the rest of the library can trust it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/crypto.hpp"
#include "transport/transport.hpp"

namespace splitfs::core {

struct ClientConfig {
  std::filesystem::path home;
  transport::Endpoint https;
  transport::Endpoint tcp;
  transport::Timeouts timeouts;
  std::uint32_t segment_bytes = 0;
};

inline constexpr const char* kConfigFile = "config.toml";
inline constexpr const char* kKeyFile = "key";

// "host:port" or "[v6]:port". Throws ConfigError naming `what`.
transport::Endpoint parse_address(const std::string& kind, const std::string& text);

// Throws splitfs::ConfigError with a message saying what to do.
ClientConfig load_config(const std::filesystem::path& home);
void save_config(const ClientConfig& config);

Key load_key(const std::filesystem::path& home);
// Writes the key with mode 0600, atomically; refuses to replace an existing key.
void save_key(const std::filesystem::path& home, const Key& key);

// Writes `data` to `path` through a temporary file and rename, with the given mode.
void write_file_atomically(const std::filesystem::path& path, std::string_view data, unsigned mode);

}  // namespace splitfs::core
