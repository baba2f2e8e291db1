#include "tls/identity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using splitfs::tls::Identity;
using splitfs::tls::Pin;
using splitfs::tls::TlsError;

namespace {

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string pattern = (fs::temp_directory_path() / "splitfs-tls-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

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

// Runs a TLS handshake between a pinned client and a server over an in-memory BIO pair.
Outcome handshake(const Identity& server_identity, Pin& pin) {
  SslCtxPtr server_ctx(SSL_CTX_new(TLS_server_method()));
  SslCtxPtr client_ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(server_ctx);
  REQUIRE(client_ctx);
  splitfs::tls::configure_server_context(server_ctx.get(), server_identity);
  splitfs::tls::pin_server_certificate(client_ctx.get(), &pin);

  SslPtr server(SSL_new(server_ctx.get()));
  SslPtr client(SSL_new(client_ctx.get()));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_bio, 0, &server_bio, 0) == 1);
  SSL_set_bio(client.get(), client_bio, client_bio);
  SSL_set_bio(server.get(), server_bio, server_bio);
  SSL_set_connect_state(client.get());
  SSL_set_accept_state(server.get());

  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 20 && !(client_done && server_done); ++round) {
    if (!client_done) {
      int rc = SSL_do_handshake(client.get());
      if (rc == 1) {
        client_done = true;
      } else if (SSL_get_error(client.get(), rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return Outcome::refused;
      }
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server.get());
      if (rc == 1) {
        server_done = true;
      } else if (SSL_get_error(server.get(), rc) != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return Outcome::refused;
      }
    }
  }
  REQUIRE(client_done);
  REQUIRE(server_done);
  CHECK(SSL_version(client.get()) == TLS1_3_VERSION);
  return Outcome::accepted;
}

}  // namespace

TEST_CASE("an identity is created once and reloaded unchanged") {
  ScratchDir dir;
  Identity first = splitfs::tls::load_or_create_identity(dir.path);
  CHECK(first.key_file == dir.path / "tls" / "key.pem");
  CHECK(first.cert_file == dir.path / "tls" / "cert.pem");
  REQUIRE(fs::exists(first.key_file));
  REQUIRE(fs::exists(first.cert_file));

  Identity again = splitfs::tls::load_or_create_identity(dir.path);
  CHECK(again.fingerprint == first.fingerprint);
  CHECK(again.key_file == first.key_file);

  // The fingerprint describes the certificate on disk.
  X509Ptr cert = read_cert(first.cert_file);
  CHECK(splitfs::tls::certificate_fingerprint(cert.get()) == first.fingerprint);
}

TEST_CASE("the private key is readable by its owner only") {
  ScratchDir dir;
  Identity id = splitfs::tls::load_or_create_identity(dir.path);
  struct stat st {};
  REQUIRE(::stat(id.key_file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((dir.path / "tls").c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);
  CHECK_FALSE(fs::exists(dir.path / "tls" / "key.pem.tmp"));
}

TEST_CASE("a key readable by others is refused on reload") {
  ScratchDir dir;
  Identity id = splitfs::tls::load_or_create_identity(dir.path);
  REQUIRE(::chmod(id.key_file.c_str(), 0644) == 0);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path), TlsError);
}

TEST_CASE("fingerprints have the SHA256:<64 lowercase hex> form") {
  ScratchDir dir;
  Identity id = splitfs::tls::load_or_create_identity(dir.path);
  const std::string prefix = "SHA256:";
  REQUIRE(id.fingerprint.size() == prefix.size() + 64);
  CHECK(id.fingerprint.substr(0, prefix.size()) == prefix);
  CHECK(is_lower_hex(id.fingerprint.substr(prefix.size())));
}

TEST_CASE("two data folders get two different identities") {
  ScratchDir a;
  ScratchDir b;
  Identity first = splitfs::tls::load_or_create_identity(a.path);
  Identity second = splitfs::tls::load_or_create_identity(b.path);
  CHECK(first.fingerprint != second.fingerprint);
}

TEST_CASE("the certificate names localhost, loopback addresses and the extra names") {
  ScratchDir dir;
  Identity id = splitfs::tls::load_or_create_identity(
      dir.path, {"files.example.org", "192.0.2.7", "2001:db8::5"});
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
  ScratchDir dir;
  splitfs::tls::load_or_create_identity(dir.path, {"a.example.org"});
  CHECK_NOTHROW(splitfs::tls::load_or_create_identity(dir.path, {"A.example.org"}));
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path, {"b.example.org"}), TlsError);
}

TEST_CASE("invalid extra names are refused") {
  ScratchDir dir;
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path, {"bad name"}), TlsError);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path, {"a,DNS:evil"}), TlsError);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path, {""}), TlsError);
}

TEST_CASE("a key left without a certificate is replaced by a fresh identity") {
  ScratchDir dir;
  Identity first = splitfs::tls::load_or_create_identity(dir.path);
  fs::remove(first.cert_file);
  Identity second = splitfs::tls::load_or_create_identity(dir.path);
  CHECK(second.fingerprint != first.fingerprint);
  CHECK(fs::exists(second.cert_file));
}

TEST_CASE("a certificate without its key is an error") {
  ScratchDir dir;
  Identity first = splitfs::tls::load_or_create_identity(dir.path);
  fs::remove(first.key_file);
  CHECK_THROWS_AS(splitfs::tls::load_or_create_identity(dir.path), TlsError);
}

TEST_CASE("a pinned client accepts the matching server and refuses another") {
  ScratchDir a;
  ScratchDir b;
  Identity server = splitfs::tls::load_or_create_identity(a.path);
  Identity impostor = splitfs::tls::load_or_create_identity(b.path);

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
