// The one exception hierarchy of the splitfs library surface. Every failure a caller can see is a
// splitfs::Error subclass with a message a person can act on; no OpenSSL, curl or Asio error
// escapes unexplained.
#pragma once

#include <stdexcept>
#include <string>

namespace splitfs {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A server could not be reached, timed out, or dropped the connection.
class ServerUnavailable : public Error {
 public:
  ServerUnavailable(std::string server, std::string address, const std::string& what)
      : Error(what), server_(std::move(server)), address_(std::move(address)) {}
  const std::string& server() const { return server_; }    // "HTTPS" or "TCP"
  const std::string& address() const { return address_; }  // "host:port"

 private:
  std::string server_;
  std::string address_;
};

// No stored file has that name.
class NotFound : public Error {
 public:
  using Error::Error;
};

// Data from a server is not what was stored: altered, swapped, reordered, truncated, foreign,
// rolled back, or the two servers disagree.
class IntegrityError : public Error {
 public:
  using Error::Error;
};

// The server's identity or the client's credentials were refused.
class AuthError : public Error {
 public:
  using Error::Error;
};

// Missing or invalid client configuration or key.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A newer version was committed concurrently.
class ConflictError : public Error {
 public:
  using Error::Error;
};

// The server refused or failed a request for a reason not covered above, or spoke nonsense.
class ServerError : public Error {
 public:
  using Error::Error;
};

// A local file could not be read or written.
class LocalIoError : public Error {
 public:
  using Error::Error;
};

// A server refused to store more for this user: its quota there would be exceeded. What was stored
// before is intact.
class QuotaExceeded : public Error {
 public:
  using Error::Error;
};

// A malware check blocked a file (README "Malicious files"): a store sent nothing to any server, a
// fetch left nothing under the destination's name. The bytes are kept in the quarantine folder
// (quarantine_path(); empty when they could not be kept there).
class MaliciousFileError : public Error {
 public:
  MaliciousFileError(std::string detector, std::string rule, std::string quarantine_path,
                     const std::string& what)
      : Error(what),
        detector_(std::move(detector)),
        rule_(std::move(rule)),
        quarantine_path_(std::move(quarantine_path)) {}
  const std::string& detector() const { return detector_; }  // "heuristics", "yara", "clamav"
  const std::string& rule() const { return rule_; }          // the rule or signature that fired
  const std::string& quarantine_path() const { return quarantine_path_; }

 private:
  std::string detector_;
  std::string rule_;
  std::string quarantine_path_;
};

}  // namespace splitfs
