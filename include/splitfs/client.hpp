// The splitfs client library. A Client stores files split across two servers (1024-byte chunks,
// odd chunks to the HTTPS server, even chunks to the TCP server), encrypted and authenticated on
// this machine, and fetches them back byte for byte or not at all.
//
// Configuration lives in a client home folder (init() writes it; default ~/.config/splitfs or
// $SPLITFS_HOME): the two servers' addresses and pinned certificate fingerprints, and the content
// key. Every failure is a splitfs::Error subclass (errors.hpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <splitfs/errors.hpp>

namespace splitfs {

struct InitOptions {
  std::string https;              // "HOST:PORT" of the HTTPS server
  std::string tcp;                // "HOST:PORT" of the TCP server
  std::string https_fingerprint;  // "SHA256:<hex>"; required unless accept_new
  std::string tcp_fingerprint;
  // Trust whatever identity the servers present now and pin it (like ssh's accept-new).
  bool accept_new = false;
  // Replace an existing configuration. The content key is kept unless new_key is set.
  bool force = false;
  bool new_key = false;
};

// What init() pinned.
struct InitResult {
  std::filesystem::path home;
  std::string https_fingerprint;
  std::string tcp_fingerprint;
  bool key_created = false;
};

// Writes a client configuration and, if absent, a new 256-bit content key (mode 0600) into home.
InitResult init(const std::filesystem::path& home, const InitOptions& options);

struct ListEntry {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t version = 0;
  std::int64_t stored_at_ns = 0;
  std::uint64_t chunks = 0;
};

struct ServerPlacement {
  std::string server;   // "HTTPS" or "TCP"
  std::string address;  // "host:port"
  std::uint64_t version = 0;
  std::uint64_t shares = 0;
  std::uint64_t chunks = 0;  // as the server reports it
  std::uint64_t stored_bytes = 0;
};

struct FileStat {
  ListEntry entry;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::uint32_t segment_bytes = 0;
  std::vector<ServerPlacement> servers;
};

class Client {
 public:
  // $SPLITFS_HOME, else ~/.config/splitfs.
  static std::filesystem::path default_home();
  // Reads the configuration and key in home. Throws ConfigError.
  explicit Client(const std::filesystem::path& home = default_home());
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Stores the local file at path under name, replacing an older version atomically.
  void store(const std::filesystem::path& path, const std::string& name);
  // Rebuilds name into dest (a file path, or a folder to fetch into under the name's last
  // component). The output appears only once every byte is verified.
  std::filesystem::path fetch(const std::string& name, const std::filesystem::path& dest);
  // Bytes [offset, offset + length) of name, verified; shorter at the end of the file.
  std::vector<std::uint8_t> read(const std::string& name, std::uint64_t offset,
                                 std::uint64_t length);
  std::vector<ListEntry> list();
  void remove(const std::string& name);
  FileStat stat(const std::string& name);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The problem statement's front door, on the default home: store a local file under its base name;
// fetch a stored name into the current folder.
void split_store(const std::filesystem::path& file);
void split_fetch(const std::string& file);

}  // namespace splitfs
