#include "tls/identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <catch2/catch.hpp>

#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::testing::TempDir;
using splitfs::tls::Identity;
using splitfs::tls::Pin;
using splitfs::tls::TlsError;

namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;

X509Ptr read_cert(const fs::path& path) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "r"), &BIO_free);
  REQUIRE(bio);
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

bool is_lower_hex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

enum class Outcome { accepted, refused };

// A client identity shared by the handshakes of this test program.
const Identity& client_identity() {
  static TempDir dir("splitfs-tls");
  static const Identity identity = splitfs::tls::load_or_create_client_identity(dir / "id");
  return identity;
}

struct Handshake {
  Outcome outcome = Outcome::refused;
  bool client_done = false;    // the client finished its side (in TLS 1.3, before the server)
  std::string seen_by_server;  // the client fingerprint the server saw
  bool resumable = false;      // whether the client got a session it could resume
};

// Runs a TLS handshake between a pinned client presenting `presented` (nothing if null) and a
// server, over an in-memory BIO pair.
Handshake run_handshake(const Identity& server_identity, Pin& pin, const Identity* presented) {
  SslCtxPtr server_ctx(SSL_CTX_new(TLS_server_method()));
  SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(server_ctx);
  REQUIRE(client_ctx);
  splitfs::tls::configure_server_context(server_ctx.get(), server_identity);
  splitfs::tls::pin_server_certificate(client_ctx.get(), &pin);
  if (presented != nullptr) {
    splitfs::tls::present_client_certificate(client_ctx.get(), presented->cert_file,
                                             presented->key_file);
  }

  SslPtr server(SSL_new(server_ctx.get()));
  SslPtr client(SSL_new(client_ctx.get()));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());

  Handshake result;
  bool server_done = false;
  for (int round = 0; round < 20 && !(result.client_done && server_done); ++round) {
    if (!result.client_done) {
      int rc = SSL_do_handshake(client.get());
      if (rc == 1) {
        result.client_done = true;
      } else if (SSL_get_error(client.get(), rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return result;
      }
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server.get());
      if (rc == 1) {
        server_done = true;
      } else if (SSL_get_error(server.get(), rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return result;
      }
    }
  }
  REQUIRE(result.client_done);
  REQUIRE(server_done);
  CHECK(SSL_version(client.get()) == TLS1_3_VERSION);
  // Let the client read whatever the server sent after its Finished (session tickets, if any).
  char byte = 0;
  SSL_read(client.get(), &byte, 1);
  ERR_clear_error();
  result.resumable = SSL_SESSION_is_resumable(SSL_get_session(client.get())) == 1;
  result.seen_by_server = splitfs::tls::peer_fingerprint(server.get());
  result.outcome = Outcome::accepted;
  return result;
}

Outcome handshake(const Identity& server_identity, Pin& pin) {
  return run_handshake(server_identity, pin, &client_identity()).outcome;
}

}  // namespace

TEST_CASE("an identity is created once and reloaded unchanged") {
  TempDir dir("splitfs-tls");
  Identity first = splitfs::tls::load_or_create_identity(dir.path());
  CHECK(first.key_file == dir / "tls" / "key.pem");
  CHECK(first.cert_file == dir / "tls" / "cert.pem");
  REQUIRE(fs::exists(first.key_file));
  REQUIRE(fs::exists(first.cert_file));

  Identity again = splitfs::tls::load_or_create_identity(dir.path());
  CHECK(again.fingerprint == first.fingerprint);
  CHECK(again.key_file == first.key_file);

  // The fingerprint describes the certificate on disk.
  X509Ptr cert = read_cert(first.cert_file);
  CHECK(splitfs::tls::certificate_fingerprint(cert.get()) == first.fingerprint);
}

TEST_CASE("the private key is readable by its owner only") {
  TempDir dir("splitfs-tls");
  Identity id = splitfs::tls::load_or_create_identity(dir.path());
  struct stat st {};
  REQUIRE(::stat(id.key_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((dir / "tls").c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);
  CHECK_FALSE(fs::exists(dir / "tls" / "key.pem.tmp"));
}

TEST_CASE("a key readable by others is refused on reload") {
  TempDir dir("splitfs-tls");
  Identity id = splitfs::tls::load_or_create_identity(dir.path());
  REQUIRE(::chmod(id.key_file.c_str(), 0644) == 0);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path()), TlsError);
}

TEST_CASE("fingerprints have the SHA256:<64 lowercase hex> form") {
  TempDir dir("splitfs-tls");
  Identity id = splitfs::tls::load_or_create_identity(dir.path());
  const std::string prefix = "SHA256:";
  REQUIRE(id.fingerprint.size() == prefix.size() + 64);
  CHECK(id.fingerprint.substr(0, prefix.size()) == prefix);
  CHECK(is_lower_hex(id.fingerprint.substr(prefix.size())));
}

TEST_CASE("two data folders get two different identities") {
  TempDir a("splitfs-tls");
  TempDir b("splitfs-tls");
  Identity first = splitfs::tls::load_or_create_identity(a.path());
  Identity second = splitfs::tls::load_or_create_identity(b.path());
  CHECK(first.fingerprint != second.fingerprint);
}

TEST_CASE("the certificate names localhost, loopback addresses and the extra names") {
  TempDir dir("splitfs-tls");
  Identity id = splitfs::tls::load_or_create_identity(
      dir.path(), {"files.example.org", "192.0.2.7", "2001:db8::5"});
  X509Ptr cert = read_cert(id.cert_file);

  for (std::string host : {"localhost", "files.example.org"}) {
    CHECK(X509_check_host(cert.get(), host.data(), host.size(), 0, nullptr) == 1);
  }
  for (const char* ip : {"127.0.0.1", "::1", "192.0.2.7", "2001:db8::5"}) {
    CHECK(X509_check_ip_asc(cert.get(), ip, 0) == 1);
  }
  std::string other = "other.example.org";
  CHECK(X509_check_host(cert.get(), other.data(), other.size(), 0, nullptr) != 1);
  CHECK(X509_check_ip_asc(cert.get(), "192.0.2.8", 0) != 1);

  char cn[64] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof(cn));
  CHECK(std::string(cn) == "splitfs server");
  // Valid for about ten years.
  int days = 0;
  int seconds = 0;
  REQUIRE(ASN1_TIME_diff(&days, &seconds, X509_get0_notBefore(cert.get()),
                         X509_get0_notAfter(cert.get())) == 1);
  CHECK(days >= 3650);
}

TEST_CASE("reloading with a name the certificate lacks is refused") {
  TempDir dir("splitfs-tls");
  splitfs::tls::load_or_create_identity(dir.path(), {"a.example.org"});
  CHECK_NOTHROW(splitfs::tls::load_or_create_identity(dir.path(), {"A.example.org"}));
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path(), {"b.example.org"}), TlsError);
}

TEST_CASE("invalid extra names are refused") {
  TempDir dir("splitfs-tls");
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path(), {"bad name"}), TlsError);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path(), {"a,DNS:evil"}), TlsError);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path(), {""}), TlsError);
}

TEST_CASE("a key left without a certificate is replaced by a fresh identity") {
  TempDir dir("splitfs-tls");
  Identity first = splitfs::tls::load_or_create_identity(dir.path());
  fs::remove(first.cert_file);
  Identity second = splitfs::tls::load_or_create_identity(dir.path());
  CHECK(second.fingerprint != first.fingerprint);
  CHECK(fs::exists(second.cert_file));
}

TEST_CASE("a certificate without its key is an error") {
  TempDir dir("splitfs-tls");
  Identity first = splitfs::tls::load_or_create_identity(dir.path());
  fs::remove(first.key_file);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path()), TlsError);
}

TEST_CASE("a pinned client accepts the matching server and refuses another") {
  TempDir a("splitfs-tls");
  TempDir b("splitfs-tls");
  Identity server = splitfs::tls::load_or_create_identity(a.path());
  Identity impostor = splitfs::tls::load_or_create_identity(b.path());

  SECTION("matching pin") {
    Pin pin{server.fingerprint, {}};
    CHECK(handshake(server, pin) == Outcome::accepted);
    CHECK(pin.presented == server.fingerprint);
  }
  SECTION("pin in uppercase hex") {
    std::string upper = server.fingerprint;
    for (std::size_t i = 7; i < upper.size(); ++i)
      upper[i] = static_cast<char>(std::toupper(upper[i]));
    Pin pin{upper, {}};
    CHECK(handshake(server, pin) == Outcome::accepted);
  }
  SECTION("mismatching pin") {
    Pin pin{server.fingerprint, {}};
    CHECK(handshake(impostor, pin) == Outcome::refused);
    CHECK(pin.presented == impostor.fingerprint);
  }
  SECTION("empty pin accepts and reports what it saw") {
    Pin pin{};
    CHECK(handshake(impostor, pin) == Outcome::accepted);
    CHECK(pin.presented == impostor.fingerprint);
  }
}

TEST_CASE("a client identity is created once, names no host and serves client authentication") {
  TempDir dir("splitfs-tls");
  Identity first = splitfs::tls::load_or_create_client_identity(dir / "identity");
  CHECK(first.key_file == dir / "identity" / "key.pem");
  Identity again = splitfs::tls::load_or_create_client_identity(dir / "identity");
  CHECK(again.fingerprint == first.fingerprint);
  CHECK(splitfs::tls::load_client_identity(dir / "identity").fingerprint == first.fingerprint);
  struct stat st {};
  REQUIRE(::stat(first.key_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  X509Ptr cert = read_cert(first.cert_file);
  char cn[64] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof(cn));
  CHECK(std::string(cn) == "splitfs client");
  CHECK(X509_get_ext_by_NID(cert.get(), NID_subject_alt_name, -1) < 0);
  CHECK((X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT) != 0);
  CHECK((X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER) == 0);
  CHECK(first.fingerprint != splitfs::tls::load_or_create_identity(dir.path()).fingerprint);
}

TEST_CASE("loading a client identity that does not exist is an error, not a creation") {
  TempDir dir("splitfs-tls");
  CHECK_THROWS_AS(splitfs::tls::load_client_identity(dir / "none"), TlsError);
  CHECK_FALSE(fs::exists(dir / "none"));
}

TEST_CASE("the server requires a client certificate and reports the one it saw") {
  TempDir dir("splitfs-tls");
  Identity server = splitfs::tls::load_or_create_identity(dir.path());

  SECTION("a client without a certificate is refused by the server") {
    Pin pin{server.fingerprint, {}};
    const Handshake result = run_handshake(server, pin, nullptr);
    CHECK(result.outcome == Outcome::refused);
    // TLS 1.3: the client believes it is done; the server's refusal reaches it as an alert.
    CHECK(result.client_done);
  }
  SECTION("any client certificate passes TLS; the server sees its fingerprint") {
    TempDir other("splitfs-tls");
    const Identity stranger = splitfs::tls::load_or_create_client_identity(other / "id");
    for (const Identity* client : {&client_identity(), &stranger}) {
      Pin pin{server.fingerprint, {}};
      const Handshake result = run_handshake(server, pin, client);
      CHECK(result.outcome == Outcome::accepted);
      CHECK(result.seen_by_server == client->fingerprint);
    }
  }
  SECTION("the server issues nothing to resume: every connection proves its key again") {
    Pin pin{server.fingerprint, {}};
    const Handshake result = run_handshake(server, pin, &client_identity());
    REQUIRE(result.outcome == Outcome::accepted);
    CHECK_FALSE(result.resumable);
  }
}

TEST_CASE("SPLITFS_IDENTITY makes every pinned context present that identity") {
  TempDir dir("splitfs-tls");
  Identity server = splitfs::tls::load_or_create_identity(dir.path());
  const Identity env_identity = splitfs::tls::load_or_create_client_identity(dir / "env-identity");
  REQUIRE(::setenv(splitfs::tls::kIdentityEnvironment, (dir / "env-identity").c_str(), 1) == 0);
  Pin pin{server.fingerprint, {}};
  const Handshake with_env = run_handshake(server, pin, nullptr);
  CHECK(with_env.outcome == Outcome::accepted);
  CHECK(with_env.seen_by_server == env_identity.fingerprint);
  // An explicit certificate replaces it.
  Pin again{server.fingerprint, {}};
  CHECK(run_handshake(server, again, &client_identity()).seen_by_server ==
        client_identity().fingerprint);
  REQUIRE(::unsetenv(splitfs::tls::kIdentityEnvironment) == 0);
}

TEST_CASE("a client key readable by others is not presented") {
  TempDir dir("splitfs-tls");
  const Identity id = splitfs::tls::load_or_create_client_identity(dir / "id");
  REQUIRE(::chmod(id.key_file.c_str(), 0640) == 0);
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  CHECK_THROWS_AS(splitfs::tls::present_client_certificate(ctx.get(), id.cert_file, id.key_file),
                  TlsError);
  TempDir other("splitfs-tls");
  const Identity mismatched = splitfs::tls::load_or_create_client_identity(other / "id");
  REQUIRE(::chmod(id.key_file.c_str(), 0600) == 0);
  CHECK_THROWS_AS(
      splitfs::tls::present_client_certificate(ctx.get(), id.cert_file, mismatched.key_file),
      TlsError);
}

TEST_CASE("fingerprints are validated and normalized to lowercase") {
  const std::string hex(64, 'a');
  CHECK(splitfs::tls::valid_fingerprint("SHA256:" + hex));
  CHECK(splitfs::tls::valid_fingerprint("SHA256:" + std::string(64, 'F')));
  CHECK_FALSE(splitfs::tls::valid_fingerprint("SHA256:" + hex.substr(1)));
  CHECK_FALSE(splitfs::tls::valid_fingerprint("SHA256:" + hex + "0"));
  CHECK_FALSE(splitfs::tls::valid_fingerprint("sha256:" + hex));
  CHECK_FALSE(splitfs::tls::valid_fingerprint("SHA256:" + std::string(63, 'a') + "g"));
  CHECK_FALSE(splitfs::tls::valid_fingerprint(""));
  CHECK(splitfs::tls::normalized_fingerprint("SHA256:" + std::string(64, 'F')) ==
        "SHA256:" + std::string(64, 'f'));
}
