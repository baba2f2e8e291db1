// `splitfs config show`: the settings a client would use, each with where it came from, secrets
// masked. Nothing is shown that could open the data or act as the user: the content key, the
// passphrases and the private key appear only as whether they are there and how they are kept.
//
// Precedence, highest first: the command-line flag (--home), the environment (SPLITFS_HOME,
// SPLITFS_IDENTITY, SPLITFS_PASSPHRASE, SPLITFS_NEW_PASSPHRASE), the configuration file
// (HOME/config.toml), the built-in defaults. Every key of config.toml is shown, known or not.
// Never throws for a missing or broken client home: what cannot be read is shown as such.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace splitfs::core {

struct Setting {
  std::string name;    // "home", "servers.https.address", "key", "env.SPLITFS_PASSPHRASE", ...
  std::string value;   // as the library would use it; "(hidden)" and the like for secrets
  std::string source;  // "flag --home", "environment SPLITFS_HOME", "config.toml", "default", ...
};

// The settings for the client home that `home_flag` (the --home argument; empty when absent) and
// the environment select, in a fixed order: home, configuration file, its keys (defaults filled
// in), key, identity, version log, passphrase variables, other SPLITFS_* variables, and last
// "check": "ok", or what the library would refuse the configuration for.
std::vector<Setting> effective_settings(const std::string& home_flag);

// This client's TLS fingerprint ("SHA256:..."), or why there is none: "none yet: ..." or
// "unusable: ...". Never creates an identity.
std::string client_identity_text(const std::filesystem::path& home);

// One line per setting, columns aligned: NAME  VALUE  (SOURCE).
std::string settings_text(const std::vector<Setting>& settings);
// {"settings": [{"name": ..., "value": ..., "source": ...}, ...]} and a newline.
std::string settings_json(const std::vector<Setting>& settings);

}  // namespace splitfs::core
