// TLS identities, both ways. A server creates its own on first start (a P-256 key and a self-signed
// certificate in its data folder); clients pin the certificate's SHA-256 fingerprint instead of
// trusting a CA, so a changed identity is refused rather than silently accepted. Each client has an
// identity of its own too (created by `splitfs init`), which it presents on every connection; the
// server accepts any certificate at the TLS level (the handshake proves the client holds its key)
// and maps its fingerprint to an enrolled user (enrolment.hpp), so no CA and no secret is shared.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace splitfs::tls {

class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Identity {
  std::filesystem::path key_file;   // PEM private key, mode 0600
  std::filesystem::path cert_file;  // PEM certificate
  std::string fingerprint;          // "SHA256:<64 lowercase hex>" of the DER certificate
};

// Loads the identity in `dir` (tls/ key.pem and cert.pem), creating it when absent. The certificate
// names localhost, 127.0.0.1, ::1 and every entry of `extra_names` (DNS names or IP addresses) so
// hostname checks pass for the addresses the server is reached by. Throws TlsError.
Identity load_or_create_identity(const std::filesystem::path& dir,
                                 const std::vector<std::string>& extra_names = {});

// Loads the client identity in `dir` itself (key.pem, mode 0600, and cert.pem), creating it when
// absent. Its certificate names no host: only its fingerprint matters. Throws TlsError.
Identity load_or_create_client_identity(const std::filesystem::path& dir);
// Loads the client identity in `dir` without creating one. Throws TlsError.
Identity load_client_identity(const std::filesystem::path& dir);

// "SHA256:<hex>" of a certificate's DER encoding.
std::string certificate_fingerprint(X509* certificate);
// True for "SHA256:" followed by 64 hex digits (either case).
bool valid_fingerprint(std::string_view text);
// "SHA256:" followed by the hex digits in lowercase, as fingerprints are printed and stored.
std::string normalized_fingerprint(std::string_view text);
// The fingerprint of the certificate the peer of `ssl` presented, or "" if it presented none.
std::string peer_fingerprint(SSL* ssl);

// Names a folder holding a client identity (key.pem, cert.pem) that pin_server_certificate makes
// every client context present when nothing else is configured: one identity for a whole process
// (a test run, a script), and the one the splitfs library uses instead of the client home's.
inline constexpr const char* kIdentityEnvironment = "SPLITFS_IDENTITY";

// What a client expects of a server's certificate, and what the server last presented (filled in
// during the handshake, so a refusal can say what was seen).
struct Pin {
  std::string expected;   // "SHA256:<hex>"; empty accepts any certificate (trust on first use)
  std::string presented;  // set by the handshake
};

// Configures a client context to accept exactly the peer whose leaf certificate matches
// `pin->expected`, TLS 1.3 only. The check runs inside the handshake; a mismatch aborts it. `pin`
// must outlive `ctx` and is not shared between threads. Call it before any SSL object is created
// from `ctx` (an SSL copies its context's verify mode when created, so an earlier one would not
// enforce the pin). Used by both client transports. When $SPLITFS_IDENTITY is set, the context
// also presents that identity (present_client_certificate afterwards replaces it).
void pin_server_certificate(SSL_CTX* ctx, Pin* pin);

// Makes a client context present this certificate and key on every connection. Throws TlsError
// (missing files, a key readable by others, a key that does not match).
void present_client_certificate(SSL_CTX* ctx, const std::filesystem::path& cert_file,
                                const std::filesystem::path& key_file);

// Server-side context: TLS 1.3 only, the identity's key and certificate, a client certificate
// required on every connection (any certificate: the fingerprint is checked against the enrolled
// users per request), no session resumption (so every connection proves its key afresh).
void configure_server_context(SSL_CTX* ctx, const Identity& identity);

}  // namespace splitfs::tls
