// The content key: protected by a passphrase (scrypt + AES-256-GCM), exported and imported only in
// protected form, and what happens with a wrong passphrase, a tampered export or no passphrase.
// A second machine with the imported key and its own enrolled identity reads the same files.
#include <sys/stat.h>

#include <cstdlib>
#include <string>

#include "core/config.hpp"
#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;

namespace {

constexpr const char* kPassphrase = "correct horse battery staple";

// Sets or clears SPLITFS_PASSPHRASE for one scope.
class PassphraseEnv {
 public:
  explicit PassphraseEnv(const char* value) {
    if (value != nullptr)
      ::setenv(core::kPassphraseEnvironment, value, 1);
    else
      ::unsetenv(core::kPassphraseEnvironment);
    ::unsetenv(core::kNewPassphraseEnvironment);
  }
  ~PassphraseEnv() { ::unsetenv(core::kPassphraseEnvironment); }
};

unsigned mode_of(const fs::path& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

}  // namespace

TEST_CASE("security: a sealed key opens with its passphrase only, and resists tampering") {
  const core::Key key = core::random_key();
  const std::string sealed = core::seal_key(key, kPassphrase);
  CHECK(core::is_sealed_key(sealed));
  CHECK(sealed.find(to_hex(key)) == std::string::npos);
  CHECK(core::seal_key(key, kPassphrase) != sealed);  // fresh salt and nonce each time
  const auto opened = core::open_sealed_key(sealed, kPassphrase);
  REQUIRE(opened);
  CHECK(*opened == key);
  CHECK_FALSE(core::open_sealed_key(sealed, "wrong horse"));
  CHECK_FALSE(core::open_sealed_key(sealed, ""));
  CHECK_THROWS_AS(core::seal_key(key, ""), ConfigError);

  // A flipped bit anywhere after the parameters: wrong salt, nonce, ciphertext or tag.
  for (std::size_t at : {sealed.find(':', 30) + 3, sealed.rfind(':') + 5, sealed.size() - 2}) {
    std::string bad = sealed;
    bad[at] = bad[at] == '0' ? '1' : '0';
    CAPTURE(at);
    CHECK_FALSE(core::open_sealed_key(bad, kPassphrase));
  }
  // Weakened parameters fail authentication (they are bound as associated data)...
  std::string weaker = sealed;
  weaker.replace(weaker.find("N=131072"), 8, "N=1024");
  CHECK_FALSE(core::open_sealed_key(weaker, kPassphrase));
  // ...and parameters that would cost unbounded memory or time are refused before any work.
  for (const char* params : {"N=2097152,r=8,p=1", "N=131072,r=64,p=1", "N=131072,r=8,p=99",
                             "N=1000,r=8,p=1", "N=0,r=8,p=1", "N=131072,r=8", "x"}) {
    std::string crafted = sealed;
    crafted.replace(crafted.find("N="), crafted.find(':', 22) - crafted.find("N="), params);
    CAPTURE(crafted.substr(0, 60));
    CHECK_THROWS_AS(core::open_sealed_key(crafted, kPassphrase), ConfigError);
  }
  CHECK_THROWS_AS(core::open_sealed_key("splitfs-key-v1-scrypt:N=1024,r=8,p=1:zz:zz", kPassphrase),
                  ConfigError);
}

TEST_CASE("security: a passphrase-protected key works from SPLITFS_PASSPHRASE, not without it") {
  SecureServers s;
  TempDir dir("splitfs-keys");
  InitOptions options = splitfs::testing::pinned_options(s.servers.https, s.servers.tcp);
  options.key_passphrase = kPassphrase;
  const fs::path home = dir / "client";
  const InitResult result = init(home, options);
  s.enrol("carol", result.client_fingerprint);

  CHECK(key_is_protected(home));
  CHECK(mode_of(home / "key") == 0600);
  CHECK(read_file(home / "key").find("splitfs-key-v1-scrypt:") == 0);
  write_file(dir / "in", "protected content");
  {
    PassphraseEnv env("not the passphrase");
    CHECK_THROWS_AS(Client(home), ConfigError);
  }
  {
    // No terminal here (ctest gives none) and no variable: a clear ConfigError, not a hang.
    PassphraseEnv env(nullptr);
    if (::access("/dev/tty", R_OK | W_OK) != 0) {
      try {
        Client client(home);
        FAIL("a protected key opened without a passphrase");
      } catch (const ConfigError& e) {
        CHECK(std::string(e.what()).find("SPLITFS_PASSPHRASE") != std::string::npos);
      }
    }
  }
  {
    PassphraseEnv env(kPassphrase);
    Client(home).store(dir / "in", "doc");
  }
  {
    // Once opened, a process does not ask again (the mount opens several Clients).
    PassphraseEnv env("not the passphrase");
    CHECK_NOTHROW(Client(home));
  }
  {
    // Changing the passphrase keeps the key; removing it leaves the key in clear, mode 0600.
    PassphraseEnv env(kPassphrase);
    set_key_passphrase(home, "a new passphrase");
  }
  {
    PassphraseEnv env(kPassphrase);
    CHECK_THROWS_AS(Client(home), ConfigError);  // the old passphrase no longer opens it
  }
  {
    PassphraseEnv env("a new passphrase");
    Client(home).fetch("doc", dir / "out");
    CHECK(read_file(dir / "out") == "protected content");
    set_key_passphrase(home, "");
  }
  CHECK_FALSE(key_is_protected(home));
  CHECK(mode_of(home / "key") == 0600);
  PassphraseEnv env(nullptr);
  Client(home).fetch("doc", dir / "out2");
  CHECK(read_file(dir / "out2") == "protected content");
}

TEST_CASE("security: key export and import move the key to another machine, protected") {
  SecureServers s;
  Home desktop(s.servers, "desktop");
  Home laptop(s.servers, "laptop");
  // One user, two machines: each has its own certificate, both enrolled as that user.
  s.enrol("dana", desktop.fingerprint);
  s.enrol("dana", laptop.fingerprint);
  TempDir dir("splitfs-keys");
  write_file(dir / "in", random_text(50000, 9));
  desktop.client().store(dir / "in", "shared.bin");

  // Without the desktop's key the laptop sees the listing entry but cannot read it.
  CHECK_THROWS_AS(laptop.client().list(), IntegrityError);

  const fs::path exported = dir / "dana.key";
  export_key(desktop.path(), exported, kPassphrase);
  CHECK(mode_of(exported) == 0600);
  const std::string text = read_file(exported);
  CHECK(text.find(read_file(desktop.path() / "key").substr(15, 64)) == std::string::npos);
  CHECK_THROWS_AS(export_key(desktop.path(), exported, kPassphrase), LocalIoError);  // no overwrite
  CHECK_THROWS_AS(export_key(desktop.path(), dir / "empty.key", ""), ConfigError);

  CHECK_THROWS_AS(import_key(laptop.path(), exported, "wrong", true, true), ConfigError);
  // The laptop already has a (different) key from init: replacing it takes --force.
  CHECK_THROWS_AS(import_key(laptop.path(), exported, kPassphrase, true, false), ConfigError);
  std::string tampered = text;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'a' ? 'b' : 'a';
  write_file(dir / "tampered.key", tampered);
  CHECK_THROWS_AS(import_key(laptop.path(), dir / "tampered.key", kPassphrase, true, true),
                  ConfigError);
  write_file(dir / "plain.key", read_file(desktop.path() / "key"));
  CHECK_THROWS_AS(import_key(laptop.path(), dir / "plain.key", kPassphrase, true, true),
                  ConfigError);

  import_key(laptop.path(), exported, kPassphrase, true, true);
  CHECK(fs::exists(laptop.path() / "key.old"));
  CHECK(key_is_protected(laptop.path()));
  CHECK(mode_of(laptop.path() / "key") == 0600);
  {
    PassphraseEnv env(kPassphrase);
    laptop.client().fetch("shared.bin", dir / "out");
  }
  CHECK(read_file(dir / "out") == read_file(dir / "in"));
  // Importing the same key again is a no-op, not a replacement.
  PassphraseEnv env(kPassphrase);
  fs::remove(laptop.path() / "key.old");
  import_key(laptop.path(), exported, kPassphrase, false, false);
  CHECK_FALSE(fs::exists(laptop.path() / "key.old"));
  CHECK_FALSE(key_is_protected(laptop.path()));
}
