// Which clients a server accepts, and as whom: the users file in a server's data folder. Each
// enrolled user has a name (the store keeps every object under it), an optional quota, and the
// fingerprints of the client certificates allowed to act as that user (one per machine). The file
// holds fingerprints only, never a secret, so reading it gives an attacker nothing to log in with.
//
// File format (text, one user per line, written by the `users` commands of either server):
//   # comment
//   NAME quota=BYTES|none SHA256:<64 hex> [SHA256:<64 hex> ...]
// Names are 1 to 64 characters of [A-Za-z0-9._-], not starting with '.' or '-'. A fingerprint
// belongs to at most one user.
//
// Guarantees: the operator commands (add_user, revoke_user) rewrite the file atomically under an
// exclusive lock, so concurrent commands never lose each other's change and a running server never
// reads half a file. A running server (Enrolment) notices every change on the next lookup: a
// revoked client is refused on its next request.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace splitfs::tls {

inline constexpr const char* kUsersFile = "users";
inline constexpr std::size_t kMaxUserName = 64;
inline constexpr std::size_t kMaxUsersFileBytes = 4u << 20;

struct User {
  std::string name;
  std::uint64_t quota_bytes = 0;          // 0: no quota
  std::vector<std::string> fingerprints;  // normalized "SHA256:<lowercase hex>"
  friend bool operator==(const User&, const User&) = default;
};

// What a request acts as.
struct Account {
  std::string name;
  std::uint64_t quota_bytes = 0;  // 0: no quota
};

bool valid_user_name(std::string_view name);

// A parsed users file. Parsing refuses the whole file on any bad line (the message names it).
class Users {
 public:
  static std::optional<Users> parse(std::string_view text, std::string& error);
  std::string format() const;

  const std::vector<User>& users() const { return users_; }
  const User* find(std::string_view name) const;
  const User* find_by_fingerprint(std::string_view fingerprint) const;

  // Adds `fingerprint` to user `name` (created if new) and sets its quota when one is given.
  // Returns false with `error` set for a bad name or fingerprint, or a fingerprint enrolled as
  // another user.
  bool add(std::string_view name, std::string_view fingerprint, std::optional<std::uint64_t> quota,
           std::string& error);
  // Drops one fingerprint of `name` (the user goes once it has none), or the whole user when
  // `fingerprint` is empty. False if there was nothing to drop.
  bool revoke(std::string_view name, std::string_view fingerprint = {});

 private:
  std::vector<User> users_;
};

// Operator commands on DATA/users. Throw std::runtime_error with a message for the operator.
std::vector<User> list_users(const std::filesystem::path& data_dir);
void add_user(const std::filesystem::path& data_dir, std::string_view name,
              std::string_view fingerprint, std::optional<std::uint64_t> quota);
// False if no such user (or no such fingerprint of it).
bool revoke_user(const std::filesystem::path& data_dir, std::string_view name,
                 std::string_view fingerprint = {});

// A running server's view of DATA/users, re-read whenever the file changes (checked with one stat
// per lookup). A missing file means nobody is enrolled. A file that turns unreadable or malformed
// keeps the last good view (and says so through `problem`). Thread-safe.
class Enrolment {
 public:
  // Reads the file now; throws std::runtime_error if it exists but does not parse.
  explicit Enrolment(std::filesystem::path file);

  std::optional<Account> lookup(std::string_view fingerprint);
  std::size_t size();
  // The last reload failure, once (empty if none since the last call).
  std::string take_problem();

 private:
  struct Stamp {
    bool exists = false;
    ino_t inode = 0;
    off_t size = 0;
    std::int64_t mtime_ns = 0;
    std::int64_t ctime_ns = 0;
    friend bool operator==(const Stamp&, const Stamp&) = default;
  };
  Stamp stamp() const;
  void refresh();

  std::filesystem::path file_;
  std::mutex mutex_;
  Stamp seen_;
  Stamp failed_;  // the version of the file last found malformed
  Users users_;
  std::string problem_;
};

}  // namespace splitfs::tls
