// The command line's error words: each library error's exit code (docs/cli.md), and the advice
// added to the library's message where it does not say what to do.
#include <catch2/catch.hpp>
#include <splitfs/errors.hpp>

#include "cli/errors.hpp"

using splitfs::cli::exit_code;
using splitfs::cli::explain;

TEST_CASE("every library error has its documented exit code", "[cli]") {
  CHECK(exit_code(splitfs::NotFound("x")) == 3);
  CHECK(exit_code(splitfs::IntegrityError("x")) == 4);
  CHECK(exit_code(splitfs::ServerUnavailable("TCP", "h:1", "x")) == 5);
  CHECK(exit_code(splitfs::AuthError("x")) == 6);
  CHECK(exit_code(splitfs::ConfigError("x")) == 7);
  CHECK(exit_code(splitfs::ConflictError("x")) == 8);
  CHECK(exit_code(splitfs::QuotaExceeded("x")) == 9);
  CHECK(exit_code(splitfs::MaliciousFileError("yara", "r", "", "x")) == 10);
  CHECK(exit_code(splitfs::LocalIoError("x")) == 1);
  CHECK(exit_code(splitfs::ServerError("x")) == 1);
  CHECK(exit_code(std::runtime_error("x")) == 1);
}

TEST_CASE("advice: where to look, what to run", "[cli]") {
  const std::string unreachable = explain(splitfs::ServerUnavailable(
      "TCP", "127.0.0.1:65432",
      "TCP server at 127.0.0.1:65432 is not reachable (connection refused) - is it started?"));
  CHECK(unreachable.starts_with("TCP server at 127.0.0.1:65432 is not reachable"));
  CHECK(unreachable.find("\n  `splitfs status`") != std::string::npos);

  const std::string changed = explain(splitfs::AuthError(
      "HTTPS server at h:1 presented certificate SHA256:aa but SHA256:bb is pinned; if the server "
      "was re-created, run splitfs init again"));
  CHECK(changed.starts_with("the server's TLS identity changed: HTTPS server at h:1"));
  CHECK(changed.find("do not trust it") != std::string::npos);

  const std::string refused = explain(splitfs::AuthError(
      "TCP server at h:2 refused the session: this client is not enrolled on this server"));
  CHECK(refused.find("`splitfs id`") != std::string::npos);
  // Said once only when the library already says it.
  const std::string said = explain(splitfs::AuthError(
      "the HTTPS server at h:1 refused this client: not enrolled (`splitfs id` prints it)"));
  CHECK(said.find('\n') == std::string::npos);

  const std::string quota = explain(splitfs::QuotaExceeded("the TCP server at h:2 refused"));
  CHECK(quota.find("`splitfs df`") != std::string::npos);

  // Nothing added where there is nothing to do.
  CHECK(explain(splitfs::IntegrityError("data of 'a' from the TCP server at h:2 failed")) ==
        "data of 'a' from the TCP server at h:2 failed");
}
