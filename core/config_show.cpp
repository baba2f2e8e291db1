#include "core/config_show.hpp"

#include <unistd.h>

#include <openssl/crypto.h>
#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <splitfs/client.hpp>
#include <splitfs/errors.hpp>
#include <sstream>

#include "core/config.hpp"
#include "core/manifest.hpp"
#include "scan/scan.hpp"
#include "tls/identity.hpp"

extern char** environ;

namespace splitfs::core {

namespace fs = std::filesystem;

namespace {

constexpr const char* kHidden = "(set, hidden)";
constexpr std::string_view kEnvironmentPrefix = "SPLITFS_";
constexpr std::string_view kSealedPrefix = "splitfs-key-v1-scrypt:";

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Whether a setting of this name may hold something secret: its value is never shown.
bool secret_name(std::string_view name) {
  const std::string n = lower(name);
  for (const char* word : {"passphrase", "password", "secret", "token", "private", "credential"}) {
    if (n.find(word) != std::string::npos)
      return true;
  }
  return n == "key" || n.ends_with(".key") || n.ends_with("_key");
}

std::string value_text(const toml::node& node) {
  if (const auto text = node.value<std::string>())
    return *text;
  std::ostringstream out;
  node.visit([&out](const auto& value) { out << value; });
  return out.str();
}

void flatten(const toml::table& table, const std::string& prefix, std::vector<Setting>& out) {
  for (const auto& [key, node] : table) {
    const std::string name =
        prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    if (const auto* inner = node.as_table()) {
      flatten(*inner, name, out);
      continue;
    }
    out.push_back({name, secret_name(name) ? kHidden : value_text(node), "config.toml"});
  }
}

// The keys the library reads from config.toml with a default (config.cpp), with the values it
// uses when the file does not set them.
std::vector<Setting> defaults(const fs::path& home) {
  const transport::Timeouts timeouts;
  std::vector<Setting> out = {
      {"network.connect_timeout_ms", std::to_string(timeouts.connect.count()), "default"},
      {"network.idle_timeout_ms", std::to_string(timeouts.idle.count()), "default"},
      {"servers.legacy", "false", "default"},
      {"storage.segment_bytes", std::to_string(kDefaultSegmentBytes), "default"},
  };
  try {
    const ScanConfig scan = load_scan_config(home);
    out.push_back(
        {"scan.suspicious", std::string(scan::to_string(scan.policy.suspicious)), "default"});
    out.push_back(
        {"scan.malicious", std::string(scan::to_string(scan.policy.malicious)), "default"});
    out.push_back(
        {"scan.bundled_rules", scan.settings.bundled_yara_rules ? "true" : "false", "default"});
    out.push_back({"scan.clamav_database", scan.settings.clamav_database.string(), "default"});
    out.push_back({"scan.quarantine", scan.quarantine.string(), "default"});
  } catch (const Error&) {
    // The check at the end says what is wrong with the [scan] section.
  }
  return out;
}

// config.toml's keys, then the defaults of those it does not set, sorted by name.
void file_settings(const fs::path& home, const fs::path& file, std::vector<Setting>& out) {
  std::vector<Setting> found;
  std::error_code ec;
  if (fs::exists(file, ec)) {
    try {
      flatten(toml::parse_file(file.string()), "", found);
    } catch (const toml::parse_error& e) {
      out.push_back({"config.toml", std::string("cannot be read: ") + std::string(e.description()),
                     file.string()});
    }
  }
  for (Setting& fallback : defaults(home)) {
    const bool set = std::any_of(found.begin(), found.end(),
                                 [&](const Setting& s) { return s.name == fallback.name; });
    if (!set)
      found.push_back(std::move(fallback));
  }
  std::sort(found.begin(), found.end(),
            [](const Setting& a, const Setting& b) { return a.name < b.name; });
  out.insert(out.end(), found.begin(), found.end());
}

// How the content key is kept, never the key itself.
std::string key_state(const fs::path& home) {
  try {
    std::string text = read_key_text(home);
    std::string state = "in clear, readable by its owner only";
    if (is_sealed_key(text)) {
      const std::size_t end = text.find(':', kSealedPrefix.size());
      state = "protected by a passphrase (scrypt " +
              text.substr(kSealedPrefix.size(), end - kSealedPrefix.size()) + ")";
    }
    OPENSSL_cleanse(text.data(), text.size());
    return state;
  } catch (const Error& e) {
    return e.what();
  }
}

void identity_settings(const fs::path& home, std::vector<Setting>& out) {
  const fs::path dir = identity_dir(home);
  const char* chosen = std::getenv(tls::kIdentityEnvironment);
  out.push_back({"identity", dir.string(),
                 chosen != nullptr && *chosen != '\0'
                     ? std::string("environment ") + tls::kIdentityEnvironment
                     : "default (HOME/identity)"});
  const std::string fingerprint = client_identity_text(home);
  std::string private_key = "present, readable by its owner only";
  if (fingerprint.starts_with("none yet"))
    private_key = "none yet";
  else if (fingerprint.starts_with("unusable: "))
    private_key = fingerprint.substr(10);
  out.push_back({"identity.fingerprint", fingerprint, (dir / "cert.pem").string()});
  out.push_back({"identity.private_key", private_key, (dir / "key.pem").string()});
}

// SPLITFS_* variables the settings above have not shown, secrets hidden.
void environment_settings(std::vector<Setting>& out) {
  std::vector<Setting> found;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    const std::size_t equals = text.find('=');
    if (!text.starts_with(kEnvironmentPrefix) || equals == std::string_view::npos)
      continue;
    const std::string name(text.substr(0, equals));
    if (name == "SPLITFS_HOME" || name == tls::kIdentityEnvironment || equals + 1 == text.size())
      continue;
    found.push_back({"env." + name,
                     secret_name(name) ? kHidden : std::string(text.substr(equals + 1)),
                     "environment"});
  }
  std::sort(found.begin(), found.end(),
            [](const Setting& a, const Setting& b) { return a.name < b.name; });
  out.insert(out.end(), found.begin(), found.end());
}

void json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

}  // namespace

std::string client_identity_text(const fs::path& home) {
  const fs::path dir = identity_dir(home);
  std::error_code ec;
  if (!fs::exists(dir / "cert.pem", ec) && !fs::exists(dir / "key.pem", ec))
    return "none yet: 'splitfs id' makes one";
  try {
    return tls::load_client_identity(dir).fingerprint;
  } catch (const tls::TlsError& e) {
    return std::string("unusable: ") + e.what();
  }
}

std::vector<Setting> effective_settings(const std::string& home_flag) {
  std::vector<Setting> out;
  fs::path home;
  if (!home_flag.empty()) {
    home = home_flag;
    out.push_back({"home", home.string(), "flag --home"});
  } else {
    const char* variable = std::getenv("SPLITFS_HOME");
    try {
      home = Client::default_home();
    } catch (const ConfigError& e) {
      out.push_back({"home", "none", "default"});
      out.push_back({"check", e.what(), "library check"});
      return out;
    }
    out.push_back({"home", home.string(),
                   variable != nullptr && *variable != '\0' ? "environment SPLITFS_HOME"
                                                            : "default ($HOME/.config/splitfs)"});
  }
  const fs::path file = home / kConfigFile;
  std::error_code ec;
  out.push_back({"config_file",
                 fs::exists(file, ec) ? file.string()
                                      : file.string() + " (missing: 'splitfs init' writes it)",
                 "client home"});
  file_settings(home, file, out);
  out.push_back({"key", key_state(home), (home / kKeyFile).string()});
  identity_settings(home, out);
  out.push_back({"state", (home / "state.sqlite").string(), "client home"});
  environment_settings(out);
  std::string check = "ok";
  try {
    load_config(home);
  } catch (const Error& e) {
    check = e.what();
  }
  out.push_back({"check", check, "library check"});
  return out;
}

std::string settings_text(const std::vector<Setting>& settings) {
  std::size_t name_width = 0;
  std::size_t value_width = 0;
  for (const Setting& s : settings) {
    name_width = std::max(name_width, s.name.size());
    value_width = std::max(value_width, s.value.size());
  }
  // Long values (paths, messages) should not push every source far to the right.
  value_width = std::min<std::size_t>(value_width, 72);
  std::string out;
  for (const Setting& s : settings) {
    std::string line = s.name;
    line.resize(name_width + 2, ' ');
    line += s.value;
    if (s.value.size() < value_width)
      line.resize(name_width + 2 + value_width, ' ');
    line += "  (" + s.source + ")\n";
    out += line;
  }
  return out;
}

std::string settings_json(const std::vector<Setting>& settings) {
  std::string out = "{\"settings\": [";
  for (std::size_t i = 0; i < settings.size(); ++i) {
    out += i == 0 ? "\n  {" : ",\n  {";
    out += "\"name\": ";
    json_string(out, settings[i].name);
    out += ", \"value\": ";
    json_string(out, settings[i].value);
    out += ", \"source\": ";
    json_string(out, settings[i].source);
    out += "}";
  }
  out += "\n]}\n";
  return out;
}

}  // namespace splitfs::core
