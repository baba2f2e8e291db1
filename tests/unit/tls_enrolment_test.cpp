#include "tls/enrolment.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/support/files.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;
using splitfs::tls::Enrolment;
using splitfs::tls::User;
using splitfs::tls::Users;

namespace {

std::string fingerprint(char digit) {
  return "SHA256:" + std::string(64, digit);
}

Users parse_ok(const std::string& text) {
  std::string error;
  std::optional<Users> users = Users::parse(text, error);
  INFO(error);
  REQUIRE(users);
  return *users;
}

std::string parse_error(const std::string& text) {
  std::string error;
  CHECK_FALSE(Users::parse(text, error));
  return error;
}

}  // namespace

TEST_CASE("a users file round-trips through format and parse") {
  Users users;
  std::string error;
  REQUIRE(users.add("alice", fingerprint('a'), 10u << 20, error));
  REQUIRE(users.add("alice", "SHA256:" + std::string(64, 'B'), std::nullopt, error));
  REQUIRE(users.add("bob.smith-2_x", fingerprint('c'), std::nullopt, error));
  const Users again = parse_ok(users.format());
  CHECK(again.users() == users.users());
  REQUIRE(again.users().size() == 2);
  CHECK(again.users()[0].quota_bytes == 10u << 20);
  CHECK(again.users()[0].fingerprints ==
        std::vector<std::string>{fingerprint('a'), fingerprint('b')});
  CHECK(again.users()[1].quota_bytes == 0);
  CHECK(again.find_by_fingerprint(fingerprint('b'))->name == "alice");
  CHECK(again.find_by_fingerprint(fingerprint('d')) == nullptr);
  // Comments, blank lines and Windows line ends are fine.
  const Users commented =
      parse_ok("# a comment\n\n  carol quota=none " + fingerprint('e') + "\r\n");
  CHECK(commented.find("carol") != nullptr);
}

TEST_CASE("a users file with any bad line is refused whole, naming the line") {
  const std::string good = "alice quota=none " + fingerprint('a') + "\n";
  CHECK(parse_error(good + "bob\n").find("line 2") != std::string::npos);
  CHECK_FALSE(parse_error(good + "../etc quota=none " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + "-x quota=none " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + ".x quota=none " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + std::string(65, 'n') + " quota=none " + fingerprint('b')).empty());
  CHECK_FALSE(parse_error(good + "bob quota=-5 " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + "bob quota=0 " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + "bob quota=1G " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + "bob " + fingerprint('b') + "\n").empty());
  CHECK_FALSE(parse_error(good + "bob quota=none SHA256:abc\n").empty());
  CHECK(parse_error(good + "alice quota=none " + fingerprint('b') + "\n").find("twice") !=
        std::string::npos);
  CHECK(parse_error(good + "bob quota=none " + fingerprint('a') + "\n").find("twice") !=
        std::string::npos);
}

TEST_CASE("a fingerprint belongs to one user; revoking drops one certificate or the user") {
  Users users;
  std::string error;
  REQUIRE(users.add("alice", fingerprint('a'), std::nullopt, error));
  CHECK_FALSE(users.add("bob", fingerprint('a'), std::nullopt, error));
  CHECK(error.find("alice") != std::string::npos);
  CHECK_FALSE(users.add("bad name", fingerprint('b'), std::nullopt, error));
  CHECK_FALSE(users.add("bob", "SHA1:" + std::string(40, 'a'), std::nullopt, error));
  REQUIRE(users.add("alice", fingerprint('b'), std::nullopt, error));

  CHECK_FALSE(users.revoke("alice", fingerprint('c')));
  CHECK(users.revoke("alice", fingerprint('a')));
  CHECK(users.find_by_fingerprint(fingerprint('a')) == nullptr);
  CHECK(users.find_by_fingerprint(fingerprint('b'))->name == "alice");
  CHECK(users.revoke("alice", fingerprint('b')));
  CHECK(users.find("alice") == nullptr);  // no certificate left: the user is gone

  REQUIRE(users.add("carol", fingerprint('c'), 5, error));
  CHECK(users.revoke("carol"));
  CHECK_FALSE(users.revoke("carol"));
}

TEST_CASE("operator commands create the data folder and a private users file") {
  TempDir dir("splitfs-users");
  const fs::path data = dir / "data";
  splitfs::tls::add_user(data, "alice", fingerprint('a'), 1u << 30);
  struct stat st {};
  REQUIRE(::stat(data.c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);
  REQUIRE(::stat((data / splitfs::tls::kUsersFile).c_str(), &st) == 0);
  CHECK((st.st_mode & 077) == 0);

  const std::vector<User> users = splitfs::tls::list_users(data);
  REQUIRE(users.size() == 1);
  CHECK(users[0].name == "alice");
  CHECK(users[0].quota_bytes == 1u << 30);
  CHECK_THROWS_AS(splitfs::tls::add_user(data, "bob", fingerprint('a'), std::nullopt),
                  std::runtime_error);
  CHECK(splitfs::tls::revoke_user(data, "alice"));
  CHECK_FALSE(splitfs::tls::revoke_user(data, "alice"));
  CHECK(splitfs::tls::list_users(data).empty());
  CHECK(splitfs::tls::list_users(dir / "never").empty());
}

TEST_CASE("concurrent operator commands lose no change") {
  TempDir dir("splitfs-users");
  std::vector<std::thread> threads;
  for (char c = 'a'; c <= 'f'; ++c) {
    threads.emplace_back([&dir, c] {
      for (int i = 0; i < 10; ++i) {
        const std::string name = std::string(1, c) + std::to_string(i);
        const std::string digits =
            std::string(1, c) + std::string(61, '0') + std::to_string(10 + i);
        splitfs::tls::add_user(dir.path(), name, "SHA256:" + digits, std::nullopt);
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  CHECK(splitfs::tls::list_users(dir.path()).size() == 60);
}

TEST_CASE("a running server's view follows the file: enrolment and revocation take effect") {
  TempDir dir("splitfs-users");
  Enrolment enrolment(dir / splitfs::tls::kUsersFile);
  CHECK(enrolment.size() == 0);
  CHECK_FALSE(enrolment.lookup(fingerprint('a')));

  splitfs::tls::add_user(dir.path(), "alice", fingerprint('a'), 4096);
  auto account = enrolment.lookup("SHA256:" + std::string(64, 'A'));
  REQUIRE(account);
  CHECK(account->name == "alice");
  CHECK(account->quota_bytes == 4096);

  splitfs::tls::revoke_user(dir.path(), "alice");
  CHECK_FALSE(enrolment.lookup(fingerprint('a')));
}

TEST_CASE("a users file that turns malformed keeps the last good list and says so") {
  TempDir dir("splitfs-users");
  const fs::path file = dir / splitfs::tls::kUsersFile;
  splitfs::tls::add_user(dir.path(), "alice", fingerprint('a'), std::nullopt);
  Enrolment enrolment(file);
  REQUIRE(enrolment.lookup(fingerprint('a')));

  write_file(file, "alice quota=none " + fingerprint('a') + "\ngarbage line\n");
  CHECK(enrolment.lookup(fingerprint('a')));
  CHECK(enrolment.take_problem().find("line 2") != std::string::npos);
  CHECK(enrolment.take_problem().empty());

  write_file(file, "bob quota=none " + fingerprint('b') + "\n");
  CHECK_FALSE(enrolment.lookup(fingerprint('a')));
  CHECK(enrolment.lookup(fingerprint('b')));
}

TEST_CASE("a server does not start on a malformed users file") {
  TempDir dir("splitfs-users");
  const fs::path file = dir / splitfs::tls::kUsersFile;
  write_file(file, "this is not a users file\n");
  CHECK_THROWS_AS(Enrolment(file), std::runtime_error);
}
