// splitfs config show (core/config_show.hpp): where each setting comes from, and secrets masked.
#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <splitfs/client.hpp>
#include <string>

#include "core/config_show.hpp"
#include "tests/support/files.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::core::Setting;
using splitfs::testing::read_file;
using splitfs::testing::TempDir;

namespace {

const std::string kFingerprint = "SHA256:" + std::string(64, 'a');

struct Home {
  TempDir dir{"splitfs-config-show"};
  Home() {
    ::unsetenv("SPLITFS_HOME");
    ::unsetenv("SPLITFS_IDENTITY");
    ::unsetenv("SPLITFS_PASSPHRASE");
    ::unsetenv("SPLITFS_NEW_PASSPHRASE");
  }
  ~Home() {
    ::unsetenv("SPLITFS_HOME");
    ::unsetenv("SPLITFS_PASSPHRASE");
  }
  fs::path client() const { return dir / "client"; }
  void init() const {
    splitfs::InitOptions options;
    options.https = "127.0.0.1:5000";
    options.tcp = "[::1]:65432";
    options.https_fingerprint = kFingerprint;
    options.tcp_fingerprint = kFingerprint;
    splitfs::init(client(), options);
  }
};

const Setting& find(const std::vector<Setting>& settings, const std::string& name) {
  for (const Setting& s : settings) {
    if (s.name == name)
      return s;
  }
  FAIL("no setting " << name);
  throw std::logic_error("unreachable");
}

}  // namespace

TEST_CASE("config show: a configured home, with where each value comes from") {
  Home home;
  home.init();
  const auto settings = splitfs::core::effective_settings(home.client().string());
  CHECK(find(settings, "home").source == "flag --home");
  CHECK(find(settings, "servers.https.address").value == "127.0.0.1:5000");
  CHECK(find(settings, "servers.https.address").source == "config.toml");
  CHECK(find(settings, "servers.tcp.address").value == "[::1]:65432");
  CHECK(find(settings, "servers.tcp.fingerprint").value == kFingerprint);
  CHECK(find(settings, "storage.segment_bytes").source == "config.toml");
  CHECK(find(settings, "servers.legacy").value == "false");
  CHECK(find(settings, "servers.legacy").source == "default");
  CHECK(find(settings, "key").value == "in clear, readable by its owner only");
  CHECK(find(settings, "identity.fingerprint").value == splitfs::client_fingerprint(home.client()));
  CHECK(find(settings, "identity").source == "default (HOME/identity)");
  CHECK(find(settings, "scan.malicious").value == "block");
  CHECK(find(settings, "scan.malicious").source == "default");
  CHECK(find(settings, "scan.quarantine").value == (home.client() / "quarantine").string());
  CHECK(find(settings, "check").value == "ok");
}

TEST_CASE("config show: the environment selects the home, and secrets never show") {
  Home home;
  home.init();
  const std::string key_line = read_file(home.client() / "key");
  const std::string key_hex = key_line.substr(key_line.find(':') + 1, 64);
  REQUIRE(key_hex.size() == 64);
  ::setenv("SPLITFS_HOME", home.client().c_str(), 1);
  ::setenv("SPLITFS_PASSPHRASE", "correct horse battery", 1);
  std::ofstream(home.client() / "config.toml", std::ios::app)
      << "\n[extra]\napi_token = \"tok-123456\"\nlevel = 3\n[scan]\nmalicious = \"warn\"\n";

  auto settings = splitfs::core::effective_settings("");
  CHECK(find(settings, "home").source == "environment SPLITFS_HOME");
  CHECK(find(settings, "extra.level").value == "3");
  CHECK(find(settings, "extra.api_token").value == "(set, hidden)");
  CHECK(find(settings, "scan.malicious").value == "warn");
  CHECK(find(settings, "scan.malicious").source == "config.toml");
  CHECK(find(settings, "scan.suspicious").source == "default");
  CHECK(find(settings, "env.SPLITFS_PASSPHRASE").value == "(set, hidden)");
  std::string text =
      splitfs::core::settings_text(settings) + splitfs::core::settings_json(settings);
  CHECK(text.find(key_hex) == std::string::npos);
  CHECK(text.find("correct horse") == std::string::npos);
  CHECK(text.find("tok-123456") == std::string::npos);

  splitfs::set_key_passphrase(home.client(), "correct horse battery");
  settings = splitfs::core::effective_settings("");
  CHECK(find(settings, "key").value == "protected by a passphrase (scrypt N=131072,r=8,p=1)");
  text = splitfs::core::settings_text(settings) + splitfs::core::settings_json(settings);
  CHECK(text.find(key_hex) == std::string::npos);
  CHECK(text.find(read_file(home.client() / "key").substr(40, 40)) == std::string::npos);
}

TEST_CASE("config show: a home that is not configured shows defaults and what to do") {
  Home home;
  const auto settings = splitfs::core::effective_settings((home.dir / "nothing").string());
  CHECK(find(settings, "config_file").value.find("missing") != std::string::npos);
  CHECK(find(settings, "storage.segment_bytes").value == "131072");
  CHECK(find(settings, "storage.segment_bytes").source == "default");
  CHECK(find(settings, "network.idle_timeout_ms").value == "15000");
  CHECK(find(settings, "key").value.find("splitfs init") != std::string::npos);
  CHECK(find(settings, "identity.fingerprint").value.find("splitfs id") != std::string::npos);
  CHECK(find(settings, "check").value.find("splitfs init") != std::string::npos);
}

TEST_CASE("config show: the JSON form parses and keeps every setting") {
  Home home;
  home.init();
  std::ofstream(home.client() / "config.toml", std::ios::app)
      << "\n[odd]\nquoted = \"a \\\"b\\\" \\\\ c\\nd\"\n";
  const auto settings = splitfs::core::effective_settings(home.client().string());
  const auto json = nlohmann::json::parse(splitfs::core::settings_json(settings));
  REQUIRE(json["settings"].size() == settings.size());
  for (std::size_t i = 0; i < settings.size(); ++i) {
    CHECK(json["settings"][i]["name"] == settings[i].name);
    CHECK(json["settings"][i]["value"] == settings[i].value);
    CHECK(json["settings"][i]["source"] == settings[i].source);
  }
  CHECK(find(settings, "odd.quoted").value == "a \"b\" \\ c\nd");
  const std::string text = splitfs::core::settings_text(settings);
  CHECK(std::count(text.begin(), text.end(), '\n') >= static_cast<long>(settings.size()));
}
