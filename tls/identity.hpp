// TLS identities. A server creates its own on first start (a P-256 key and a self-signed
// certificate in its data folder); clients pin the certificate's SHA-256 fingerprint instead of
// trusting a CA, so a changed identity is refused rather than silently accepted.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>
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

// "SHA256:<hex>" of a certificate's DER encoding.
std::string certificate_fingerprint(X509* certificate);

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
// enforce the pin). Used by both client transports.
void pin_server_certificate(SSL_CTX* ctx, Pin* pin);

// Server-side context: TLS 1.3 only, the identity's key and certificate.
void configure_server_context(SSL_CTX* ctx, const Identity& identity);

}  // namespace splitfs::tls
