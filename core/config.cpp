#include "core/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <charconv>
#include <fstream>
#include <splitfs/errors.hpp>
#include <sstream>

#include "core/manifest.hpp"

namespace splitfs::core {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kKeyPrefix = "splitfs-key-v1:";

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
                                const std::string& kind, const fs::path& file) {
  const auto* server = root["servers"][key].as_table();
  if (!server)
    throw ConfigError(file.string() + ": missing [servers." + key + "]");
  auto address = (*server)["address"].value<std::string>();
  auto fingerprint = (*server)["fingerprint"].value<std::string>();
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
  config.https = read_server(root, "https", "HTTPS", file);
  config.tcp = read_server(root, "tcp", "TCP", file);
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
  return config;
}

void save_config(const ClientConfig& config) {
  auto server = [](const transport::Endpoint& e) {
    return toml::table{{"address", e.address()}, {"fingerprint", e.fingerprint}};
  };
  toml::table root{
      {"servers", toml::table{{"https", server(config.https)}, {"tcp", server(config.tcp)}}},
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

Key load_key(const fs::path& home) {
  const fs::path file = home / kKeyFile;
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    throw ConfigError("no content key at " + file.string() + " - run 'splitfs init' first");
  }
  if ((st.st_mode & 077) != 0) {
    throw ConfigError(file.string() + " is readable by others; run 'chmod 600 " + file.string() +
                      "'");
  }
  std::string text = read_small_file(file, 256);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  std::optional<Bytes> bytes;
  if (text.rfind(kKeyPrefix, 0) == 0)
    bytes = from_hex(std::string_view(text).substr(kKeyPrefix.size()));
  if (!bytes || bytes->size() != kKeyBytes)
    throw ConfigError(file.string() + " is not a splitfs key");
  Key key{};
  std::copy(bytes->begin(), bytes->end(), key.begin());
  return key;
}

void save_key(const fs::path& home, const Key& key) {
  const fs::path file = home / kKeyFile;
  if (fs::exists(file))
    throw ConfigError(file.string() + " already exists; not replacing a key");
  write_file_atomically(file, std::string(kKeyPrefix) + to_hex(key) + "\n", 0600);
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
