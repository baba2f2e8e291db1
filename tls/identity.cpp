#include "tls/identity.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>
#include <system_error>
#include <utility>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "common/bytes.hpp"

namespace splitfs::tls {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kFingerprintPrefix = "SHA256:";
constexpr const char* kServerCommonName = "splitfs server";
constexpr const char* kClientCommonName = "splitfs client";
// A client certificate chain larger than this is refused before it is parsed.
constexpr long kMaxPeerCertificateBytes = 16 * 1024;
constexpr long kValidityDays = 3653;     // ten years, leap days included
constexpr long kBackdateSeconds = 3600;  // tolerate clients whose clock runs a little behind

template <auto Free>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, Deleter<GENERAL_NAME_free>>;
using Ia5Ptr = std::unique_ptr<ASN1_IA5STRING, Deleter<ASN1_IA5STRING_free>>;
using OctetsPtr = std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>>;
struct GeneralNamesDeleter {
  void operator()(GENERAL_NAMES* names) const { GENERAL_NAMES_free(names); }
};
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, GeneralNamesDeleter>;

class UniqueFd {
 public:
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

// The most useful line of OpenSSL's error queue, which is then cleared.
std::string openssl_error(const std::string& context) {
  std::string detail;
  unsigned long code = ERR_peek_last_error();
  if (code != 0) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    detail = std::string(": ") + text.data();
  }
  ERR_clear_error();
  return context + detail;
}

[[noreturn]] void fail(const std::string& context) {
  throw TlsError(openssl_error(context));
}

std::string errno_text(int err) {
  return std::generic_category().message(err);
}

// A name the certificate should carry, as parsed from the server's configuration.
struct SubjectName {
  bool is_ip = false;
  std::string text;  // DNS name in lowercase, or the address as given
  Bytes address;     // 4 or 16 bytes for IP addresses
};

bool valid_dns_name(std::string_view name) {
  if (name.empty() || name.size() > 253)
    return false;
  std::size_t label = 0;
  char previous = '.';
  for (char c : name) {
    if (c == '.') {
      if (label == 0 || previous == '-')
        return false;
      label = 0;
    } else if (std::isalnum(static_cast<unsigned char>(c)) || c == '-') {
      if (label == 0 && c == '-')
        return false;
      if (++label > 63)
        return false;
    } else {
      return false;
    }
    previous = c;
  }
  return label > 0 && previous != '-';
}

SubjectName parse_name(const std::string& raw) {
  SubjectName name;
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, raw.c_str(), &v4) == 1) {
    name.is_ip = true;
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v4);
    name.address.assign(p, p + sizeof(v4));
  } else if (::inet_pton(AF_INET6, raw.c_str(), &v6) == 1) {
    name.is_ip = true;
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v6);
    name.address.assign(p, p + sizeof(v6));
  } else if (valid_dns_name(raw)) {
    name.text.resize(raw.size());
    std::transform(raw.begin(), raw.end(), name.text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return name;
  } else {
    throw TlsError("invalid TLS name '" + raw.substr(0, 253) +
                   "': expected a DNS name or an IP address");
  }
  name.text = raw;
  return name;
}

// localhost, 127.0.0.1 and ::1 first, then the extra names, without duplicates.
std::vector<SubjectName> subject_names(const std::vector<std::string>& extra_names) {
  std::vector<SubjectName> names;
  auto add = [&names](const std::string& raw) {
    SubjectName name = parse_name(raw);
    bool seen = std::any_of(names.begin(), names.end(), [&name](const SubjectName& other) {
      return other.is_ip == name.is_ip &&
             (name.is_ip ? other.address == name.address : other.text == name.text);
    });
    if (!seen)
      names.push_back(std::move(name));
  };
  for (const char* builtin : {"localhost", "127.0.0.1", "::1"})
    add(builtin);
  for (const auto& raw : extra_names)
    add(raw);
  return names;
}

bool certificate_names(X509* cert, const SubjectName& name) {
  if (name.is_ip) {
    return X509_check_ip(cert, name.address.data(), name.address.size(), 0) == 1;
  }
  return X509_check_host(cert, name.text.data(), name.text.size(), X509_CHECK_FLAG_NO_WILDCARDS,
                         nullptr) == 1;
}

PkeyPtr generate_key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key)
    fail("cannot generate a P-256 key");
  return key;
}

void add_extension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
    fail("cannot add a certificate extension");
}

void add_subject_alt_names(X509* cert, const std::vector<SubjectName>& names) {
  GeneralNamesPtr general_names(GENERAL_NAMES_new());
  if (!general_names)
    fail("out of memory");
  for (const auto& name : names) {
    GeneralNamePtr general(GENERAL_NAME_new());
    if (!general)
      fail("out of memory");
    if (name.is_ip) {
      OctetsPtr octets(ASN1_OCTET_STRING_new());
      if (!octets || ASN1_OCTET_STRING_set(octets.get(), name.address.data(),
                                           static_cast<int>(name.address.size())) != 1) {
        fail("cannot encode an IP address");
      }
      GENERAL_NAME_set0_value(general.get(), GEN_IPADD, octets.release());
    } else {
      Ia5Ptr text(ASN1_IA5STRING_new());
      if (!text ||
          ASN1_STRING_set(text.get(), name.text.data(), static_cast<int>(name.text.size())) != 1) {
        fail("cannot encode a DNS name");
      }
      GENERAL_NAME_set0_value(general.get(), GEN_DNS, text.release());
    }
    if (sk_GENERAL_NAME_push(general_names.get(), general.get()) == 0)
      fail("out of memory");
    general.release();  // now owned by the stack
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, general_names.get(), 0, X509V3_ADD_DEFAULT) !=
      1) {
    fail("cannot add the subject alternative names");
  }
}

enum class Role { server, client };

// A server certificate carries the names it is reached by; a client certificate none.
X509Ptr make_certificate(EVP_PKEY* key, Role role, const std::vector<SubjectName>& names) {
  X509Ptr cert(X509_new());
  if (!cert)
    fail("out of memory");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1)
    fail("cannot set the certificate version");

  // A random, positive, full-length serial so two identities never share one.
  std::array<unsigned char, 16> serial{};
  if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) {
    fail("cannot draw a random serial number");
  }
  serial[0] = static_cast<unsigned char>((serial[0] & 0x7f) | 0x40);
  BignumPtr serial_bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  if (!serial_bn || !BN_to_ASN1_INTEGER(serial_bn.get(), X509_get_serialNumber(cert.get()))) {
    fail("cannot set the serial number");
  }

  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -kBackdateSeconds) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), kValidityDays, 0, nullptr)) {
    fail("cannot set the validity period");
  }
  if (X509_set_pubkey(cert.get(), key) != 1)
    fail("cannot set the public key");

  X509_NAME* subject = X509_get_subject_name(cert.get());
  const char* common_name = role == Role::server ? kServerCommonName : kClientCommonName;
  if (X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>(common_name), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(cert.get(), subject) != 1) {
    fail("cannot set the subject name");
  }

  add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), NID_ext_key_usage, role == Role::server ? "serverAuth" : "clientAuth");
  add_extension(cert.get(), NID_subject_key_identifier, "hash");
  if (role == Role::server)
    add_subject_alt_names(cert.get(), names);

  if (X509_sign(cert.get(), key, EVP_sha256()) <= 0)
    fail("cannot sign the certificate");
  return cert;
}

// PEM text of `write`'s output, wiping the memory BIO before it is freed (it may hold a key).
template <typename Write>
std::string to_pem(Write&& write, const char* what) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1)
    fail(std::string("cannot encode the ") + what);
  BUF_MEM* mem = nullptr;
  BIO_get_mem_ptr(bio.get(), &mem);
  std::string pem(mem->data, mem->length);
  OPENSSL_cleanse(mem->data, mem->length);
  return pem;
}

void sync_directory(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0)
    ::fsync(fd.get());
}

// Writes `path` so that it either keeps its old content or has the new one, never a torn file,
// with exactly `mode` from the moment it exists.
void write_atomically(const fs::path& path, std::string& data, mode_t mode) {
  fs::path tmp = path;
  tmp += ".tmp";
  ::unlink(tmp.c_str());  // leftover of an interrupted earlier attempt
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
  if (fd.get() < 0) {
    throw TlsError("cannot create " + tmp.string() + ": " + errno_text(errno));
  }
  if (::fchmod(fd.get(), mode) != 0) {
    throw TlsError("cannot set the mode of " + tmp.string() + ": " + errno_text(errno));
  }
  std::size_t written = 0;
  while (written < data.size()) {
    ssize_t n = ::write(fd.get(), data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw TlsError("cannot write " + tmp.string() + ": " + errno_text(errno));
    written += static_cast<std::size_t>(n);
  }
  OPENSSL_cleanse(data.data(), data.size());
  if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0) {
    throw TlsError("cannot write " + tmp.string() + ": " + errno_text(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw TlsError("cannot rename " + tmp.string() + ": " + errno_text(errno));
  }
  sync_directory(path.parent_path());
}

PkeyPtr read_key(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw TlsError("cannot read " + path.string() + ": " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode))
    throw TlsError(path.string() + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    throw TlsError("private key " + path.string() +
                   " is accessible by other users; run chmod 600 on it");
  }
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio)
    fail("cannot open " + path.string());
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key)
    fail("cannot read the private key in " + path.string());
  return key;
}

X509Ptr read_certificate(const fs::path& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio)
    fail("cannot open " + path.string());
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert)
    fail("cannot read the certificate in " + path.string());
  return cert;
}

void ensure_private_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir.parent_path(), ec);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    throw TlsError("cannot create " + dir.string() + ": " + errno_text(errno));
  }
  if (!fs::is_directory(dir, ec))
    throw TlsError(dir.string() + " is not a directory");
}

// Fingerprint or an empty string; never throws, so it is safe inside OpenSSL callbacks.
std::string fingerprint_noexcept(X509* cert) noexcept {
  try {
    return certificate_fingerprint(cert);
  } catch (...) {
    ERR_clear_error();
    return {};
  }
}

int verify_pinned(X509_STORE_CTX* store, void* arg) {
  auto* pin = static_cast<Pin*>(arg);
  try {
    std::string presented = fingerprint_noexcept(X509_STORE_CTX_get0_cert(store));
    pin->presented = presented;
    if (presented.empty()) {
      X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
      return 0;
    }
    if (pin->expected.empty())
      return 1;
    std::string expected = normalized_fingerprint(pin->expected);
    // Fingerprints are public, but comparing in constant time costs nothing.
    if (expected.size() == presented.size() &&
        CRYPTO_memcmp(expected.data(), presented.data(), presented.size()) == 0) {
      return 1;
    }
    X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    return 0;
  } catch (...) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_UNSPECIFIED);
    return 0;
  }
}

// Any certificate will do at the TLS level: the handshake has already proven that the peer holds
// its key, and the server decides per request whether that fingerprint is an enrolled user.
int accept_any_client(X509_STORE_CTX* store, void*) {
  return X509_STORE_CTX_get0_cert(store) != nullptr ? 1 : 0;
}

// The identity in `files_dir` (key.pem, cert.pem), created when absent. A server's certificate must
// name every entry of `names`; a client's names nothing.
Identity load_or_create(const fs::path& files_dir, Role role,
                        const std::vector<SubjectName>& names) {
  ensure_private_directory(files_dir);
  Identity identity{files_dir / "key.pem", files_dir / "cert.pem", {}};
  std::error_code ec;
  const bool have_key = fs::exists(identity.key_file, ec);
  const bool have_cert = fs::exists(identity.cert_file, ec);

  if (have_cert) {
    if (!have_key) {
      throw TlsError("certificate " + identity.cert_file.string() +
                     " has no private key next to it; restore key.pem or remove " +
                     files_dir.string() + " to create a new identity");
    }
    PkeyPtr key = read_key(identity.key_file);
    X509Ptr cert = read_certificate(identity.cert_file);
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
      fail("the private key in " + identity.key_file.string() + " does not match " +
           identity.cert_file.string());
    }
    for (const auto& name : names) {
      if (!certificate_names(cert.get(), name)) {
        throw TlsError("the certificate in " + files_dir.string() + " does not name " + name.text +
                       "; remove that folder to create a new identity (clients must then pin the "
                       "new fingerprint)");
      }
    }
    identity.fingerprint = certificate_fingerprint(cert.get());
    return identity;
  }

  // No certificate yet: a key without one is the trace of an interrupted creation, and no client
  // can have pinned anything, so a fresh pair replaces it. The key goes first: a certificate on
  // disk always has its key.
  PkeyPtr key = generate_key();
  X509Ptr cert = make_certificate(key.get(), role, names);
  std::string key_pem = to_pem(
      [&](BIO* bio) {
        return PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
      },
      "private key");
  std::string cert_pem =
      to_pem([&](BIO* bio) { return PEM_write_bio_X509(bio, cert.get()); }, "certificate");
  write_atomically(identity.key_file, key_pem, 0600);
  write_atomically(identity.cert_file, cert_pem, 0644);
  identity.fingerprint = certificate_fingerprint(cert.get());
  return identity;
}

}  // namespace

Identity load_or_create_identity(const fs::path& dir, const std::vector<std::string>& extra_names) {
  return load_or_create(dir / "tls", Role::server, subject_names(extra_names));
}

Identity load_or_create_client_identity(const fs::path& dir) {
  return load_or_create(dir, Role::client, {});
}

Identity load_client_identity(const fs::path& dir) {
  Identity identity{dir / "key.pem", dir / "cert.pem", {}};
  std::error_code ec;
  if (!fs::exists(identity.cert_file, ec) || !fs::exists(identity.key_file, ec)) {
    throw TlsError("no client identity in " + dir.string());
  }
  PkeyPtr key = read_key(identity.key_file);
  X509Ptr cert = read_certificate(identity.cert_file);
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    fail("the private key in " + identity.key_file.string() + " does not match " +
         identity.cert_file.string());
  }
  identity.fingerprint = certificate_fingerprint(cert.get());
  return identity;
}

std::string certificate_fingerprint(X509* certificate) {
  if (certificate == nullptr)
    throw TlsError("no certificate to fingerprint");
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  // X509_digest hashes the DER encoding of the certificate.
  if (X509_digest(certificate, EVP_sha256(), digest.data(), &length) != 1) {
    fail("cannot fingerprint the certificate");
  }
  return std::string(kFingerprintPrefix) + to_hex(ByteView(digest.data(), length));
}

bool valid_fingerprint(std::string_view text) {
  if (text.size() != kFingerprintPrefix.size() + 64 || !text.starts_with(kFingerprintPrefix))
    return false;
  const std::string_view hex = text.substr(kFingerprintPrefix.size());
  return std::all_of(hex.begin(), hex.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
}

std::string normalized_fingerprint(std::string_view text) {
  std::string out(text);
  if (out.size() > kFingerprintPrefix.size()) {
    std::transform(out.begin() + static_cast<std::ptrdiff_t>(kFingerprintPrefix.size()), out.end(),
                   out.begin() + static_cast<std::ptrdiff_t>(kFingerprintPrefix.size()),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  return out;
}

std::string peer_fingerprint(SSL* ssl) {
  if (ssl == nullptr)
    return {};
  X509* peer = SSL_get0_peer_certificate(ssl);
  return peer != nullptr ? fingerprint_noexcept(peer) : std::string();
}

void pin_server_certificate(SSL_CTX* ctx, Pin* pin) {
  if (ctx == nullptr || pin == nullptr)
    throw TlsError("pin_server_certificate: null argument");
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
    fail("cannot require TLS 1.3");
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, verify_pinned, pin);
  if (const char* dir = std::getenv(kIdentityEnvironment); dir != nullptr && *dir != '\0') {
    const fs::path folder(dir);
    present_client_certificate(ctx, folder / "cert.pem", folder / "key.pem");
  }
}

void present_client_certificate(SSL_CTX* ctx, const fs::path& cert_file, const fs::path& key_file) {
  if (ctx == nullptr)
    throw TlsError("present_client_certificate: null context");
  // The same checks as for a server's key: a key others can read is refused.
  PkeyPtr key = read_key(key_file);
  X509Ptr cert = read_certificate(cert_file);
  if (SSL_CTX_use_certificate(ctx, cert.get()) != 1)
    fail("cannot use the client certificate " + cert_file.string());
  if (SSL_CTX_use_PrivateKey(ctx, key.get()) != 1)
    fail("cannot use the client key " + key_file.string());
  if (SSL_CTX_check_private_key(ctx) != 1)
    fail("the client key " + key_file.string() + " does not match " + cert_file.string());
}

void configure_server_context(SSL_CTX* ctx, const Identity& identity) {
  if (ctx == nullptr)
    throw TlsError("configure_server_context: null context");
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1)
    fail("cannot require TLS 1.3");
  if (SSL_CTX_use_certificate_chain_file(ctx, identity.cert_file.c_str()) != 1) {
    fail("cannot load the certificate " + identity.cert_file.string());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, identity.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    fail("cannot load the private key " + identity.key_file.string());
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    fail("the private key does not match the certificate");
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, accept_any_client, nullptr);
  SSL_CTX_set_max_cert_list(ctx, kMaxPeerCertificateBytes);
  // A resumed session would skip the client's proof of its key: every connection does a full
  // handshake.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  if (SSL_CTX_set_num_tickets(ctx, 0) != 1)
    fail("cannot disable session tickets");
}

}  // namespace splitfs::tls
