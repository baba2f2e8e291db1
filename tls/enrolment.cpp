#include "tls/enrolment.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "tls/identity.hpp"

namespace splitfs::tls {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kHeader =
    "# splitfs enrolled users: NAME quota=BYTES|none FINGERPRINT... (no secrets; edit with the\n"
    "# server's `users add` and `users revoke` commands)\n";
constexpr std::string_view kQuotaPrefix = "quota=";
constexpr std::int64_t kRacyNanoseconds = 2'000'000'000;

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

std::string errno_text() {
  return std::generic_category().message(errno);
}

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t'))
      ++i;
    const std::size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t')
      ++i;
    if (i > start)
      words.push_back(line.substr(start, i - start));
  }
  return words;
}

// Reads the whole file (at most kMaxUsersFileBytes); nullopt if it does not exist.
std::optional<std::string> read_text(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    if (errno == ENOENT)
      return std::nullopt;
    throw std::runtime_error("cannot read " + path.string() + ": " + errno_text());
  }
  std::string text;
  char buffer[8192];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      throw std::runtime_error("cannot read " + path.string() + ": " + errno_text());
    if (n == 0)
      break;
    if (text.size() + static_cast<std::size_t>(n) > kMaxUsersFileBytes)
      throw std::runtime_error(path.string() + " is larger than " +
                               std::to_string(kMaxUsersFileBytes) + " bytes");
    text.append(buffer, static_cast<std::size_t>(n));
  }
  return text;
}

Users load(const fs::path& path) {
  const std::optional<std::string> text = read_text(path);
  if (!text)
    return Users{};
  std::string error;
  std::optional<Users> users = Users::parse(*text, error);
  if (!users)
    throw std::runtime_error(path.string() + ": " + error);
  return std::move(*users);
}

void write_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  ::unlink(tmp.c_str());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0)
    throw std::runtime_error("cannot create " + tmp.string() + ": " + errno_text());
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      throw std::runtime_error("cannot write " + tmp.string() + ": " + errno_text());
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0)
    throw std::runtime_error("cannot write " + tmp.string() + ": " + errno_text());
  if (::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot replace " + path.string() + ": " + errno_text());
  UniqueFd dir(::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0)
    ::fsync(dir.get());
}

// Creates the data folder (mode 0700) if needed and holds an exclusive lock on DATA/users.lock for
// its lifetime, so that operator commands run one at a time.
class AdminLock {
 public:
  explicit AdminLock(const fs::path& data_dir) : fd_(open_locked(data_dir)) {}

 private:
  static int open_locked(const fs::path& data_dir) {
    std::error_code ec;
    if (!fs::exists(data_dir, ec)) {
      fs::create_directories(
          data_dir.parent_path().empty() ? fs::path(".") : data_dir.parent_path(), ec);
      if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST)
        throw std::runtime_error("cannot create " + data_dir.string() + ": " + errno_text());
    }
    const fs::path lock = data_dir / (std::string(kUsersFile) + ".lock");
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0)
      throw std::runtime_error("cannot open " + lock.string() + ": " + errno_text());
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR)
        throw std::runtime_error("cannot lock " + lock.string() + ": " + errno_text());
    }
    return fd.release();
  }

  UniqueFd fd_;
};

}  // namespace

bool valid_user_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxUserName || name.front() == '.' || name.front() == '-')
    return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '.' || c == '_' || c == '-';
  });
}

std::optional<Users> Users::parse(std::string_view text, std::string& error) {
  Users out;
  std::size_t line_number = 0;
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    ++line_number;
    if (!line.empty() && line.back() == '\r')
      line.remove_suffix(1);
    const auto words = split_words(line);
    if (words.empty() || words[0].front() == '#')
      continue;
    const std::string where = "line " + std::to_string(line_number) + ": ";
    if (words.size() < 3) {
      error = where + "expected NAME quota=BYTES|none FINGERPRINT...";
      return std::nullopt;
    }
    if (!valid_user_name(words[0])) {
      error = where + "invalid user name";
      return std::nullopt;
    }
    if (out.find(words[0]) != nullptr) {
      error = where + "user '" + std::string(words[0]) + "' appears twice";
      return std::nullopt;
    }
    User user;
    user.name = std::string(words[0]);
    if (!words[1].starts_with(kQuotaPrefix)) {
      error = where + "expected quota=BYTES or quota=none";
      return std::nullopt;
    }
    const std::string_view quota = words[1].substr(kQuotaPrefix.size());
    if (quota != "none") {
      const auto [ptr, ec] =
          std::from_chars(quota.data(), quota.data() + quota.size(), user.quota_bytes);
      if (ec != std::errc{} || ptr != quota.data() + quota.size() || user.quota_bytes == 0) {
        error = where + "invalid quota";
        return std::nullopt;
      }
    }
    for (std::size_t i = 2; i < words.size(); ++i) {
      if (!valid_fingerprint(words[i])) {
        error = where + "invalid fingerprint (expected SHA256:<64 hex digits>)";
        return std::nullopt;
      }
      std::string fingerprint = normalized_fingerprint(words[i]);
      if (out.find_by_fingerprint(fingerprint) != nullptr ||
          std::find(user.fingerprints.begin(), user.fingerprints.end(), fingerprint) !=
              user.fingerprints.end()) {
        error = where + "fingerprint " + fingerprint + " is enrolled twice";
        return std::nullopt;
      }
      user.fingerprints.push_back(std::move(fingerprint));
    }
    out.users_.push_back(std::move(user));
  }
  return out;
}

std::string Users::format() const {
  std::string text(kHeader);
  for (const auto& user : users_) {
    text += user.name;
    text += " quota=";
    text += user.quota_bytes == 0 ? std::string("none") : std::to_string(user.quota_bytes);
    for (const auto& fingerprint : user.fingerprints) {
      text += ' ';
      text += fingerprint;
    }
    text += '\n';
  }
  return text;
}

const User* Users::find(std::string_view name) const {
  for (const auto& user : users_) {
    if (user.name == name)
      return &user;
  }
  return nullptr;
}

const User* Users::find_by_fingerprint(std::string_view fingerprint) const {
  for (const auto& user : users_) {
    if (std::find(user.fingerprints.begin(), user.fingerprints.end(), fingerprint) !=
        user.fingerprints.end()) {
      return &user;
    }
  }
  return nullptr;
}

bool Users::add(std::string_view name, std::string_view fingerprint,
                std::optional<std::uint64_t> quota, std::string& error) {
  if (!valid_user_name(name)) {
    error = "invalid user name '" + std::string(name.substr(0, kMaxUserName)) +
            "': use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with . or -";
    return false;
  }
  if (!valid_fingerprint(fingerprint)) {
    error = "invalid fingerprint: expected SHA256:<64 hex digits>, as `splitfs id` prints it";
    return false;
  }
  const std::string normalized = normalized_fingerprint(fingerprint);
  if (const User* owner = find_by_fingerprint(normalized); owner && owner->name != name) {
    error = normalized + " is already enrolled as user '" + owner->name + "'";
    return false;
  }
  auto it = std::find_if(users_.begin(), users_.end(),
                         [&](const User& user) { return user.name == name; });
  if (it == users_.end()) {
    users_.push_back(User{std::string(name), 0, {}});
    it = users_.end() - 1;
  }
  if (std::find(it->fingerprints.begin(), it->fingerprints.end(), normalized) ==
      it->fingerprints.end()) {
    it->fingerprints.push_back(normalized);
  }
  if (quota)
    it->quota_bytes = *quota;
  return true;
}

bool Users::revoke(std::string_view name, std::string_view fingerprint) {
  auto it = std::find_if(users_.begin(), users_.end(),
                         [&](const User& user) { return user.name == name; });
  if (it == users_.end())
    return false;
  if (fingerprint.empty()) {
    users_.erase(it);
    return true;
  }
  const std::string normalized = normalized_fingerprint(fingerprint);
  const auto removed = std::remove(it->fingerprints.begin(), it->fingerprints.end(), normalized);
  if (removed == it->fingerprints.end())
    return false;
  it->fingerprints.erase(removed, it->fingerprints.end());
  if (it->fingerprints.empty())
    users_.erase(it);
  return true;
}

std::vector<User> list_users(const fs::path& data_dir) {
  return load(data_dir / kUsersFile).users();
}

void add_user(const fs::path& data_dir, std::string_view name, std::string_view fingerprint,
              std::optional<std::uint64_t> quota) {
  AdminLock lock(data_dir);
  const fs::path file = data_dir / kUsersFile;
  Users users = load(file);
  std::string error;
  if (!users.add(name, fingerprint, quota, error))
    throw std::runtime_error(error);
  write_file(file, users.format());
}

bool revoke_user(const fs::path& data_dir, std::string_view name, std::string_view fingerprint) {
  AdminLock lock(data_dir);
  const fs::path file = data_dir / kUsersFile;
  Users users = load(file);
  if (!users.revoke(name, fingerprint))
    return false;
  write_file(file, users.format());
  return true;
}

Enrolment::Enrolment(fs::path file) : file_(std::move(file)) {
  seen_ = stamp();
  users_ = load(file_);
}

Enrolment::Stamp Enrolment::stamp() const {
  struct stat st {};
  if (::stat(file_.c_str(), &st) != 0)
    return {};
  return Stamp{true, st.st_ino, st.st_size,
               static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
               static_cast<std::int64_t>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec};
}

void Enrolment::refresh() {
  const Stamp now = stamp();
  // File times are coarse (a few ms) and inode numbers get reused, so two quick rewrites of equal
  // size could leave the same stamp: a file changed within the last seconds is read again anyway.
  const auto wall = std::chrono::system_clock::now().time_since_epoch();
  const std::int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wall).count();
  const bool settled = now_ns - now.mtime_ns > kRacyNanoseconds;
  if (now == seen_ && settled)
    return;
  try {
    users_ = load(file_);
    seen_ = now;
  } catch (const std::exception& e) {
    // Keep serving the last good list; a half-edited file must not lock every user out. The
    // problem is reported once per version of the file.
    if (!(now == failed_))
      problem_ = e.what();
    failed_ = now;
    seen_ = now;
  }
}

std::optional<Account> Enrolment::lookup(std::string_view fingerprint) {
  std::lock_guard lock(mutex_);
  refresh();
  const User* user = users_.find_by_fingerprint(normalized_fingerprint(fingerprint));
  if (user == nullptr)
    return std::nullopt;
  return Account{user->name, user->quota_bytes};
}

std::size_t Enrolment::size() {
  std::lock_guard lock(mutex_);
  refresh();
  return users_.users().size();
}

std::string Enrolment::take_problem() {
  std::lock_guard lock(mutex_);
  return std::exchange(problem_, {});
}

}  // namespace splitfs::tls
