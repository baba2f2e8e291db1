// Authentication on both servers: a client without a certificate, with a certificate nobody
// enrolled, or whose user was revoked is refused on every endpoint and frame type; enrolment and
// revocation take effect on a running server, from the next request on; the library and the
// transports report refusals as AuthError.
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;
using protocol::Status;

namespace {

// Every HTTP route, with a body where the route takes one.
std::vector<std::pair<std::string, protocol::HttpRequest>> every_route() {
  std::vector<std::pair<std::string, protocol::HttpRequest>> routes;
  for (const auto& request : every_request()) {
    protocol::HttpRequest http = protocol::to_http(request);
    routes.emplace_back(std::string(http.method) + " " + http.target, std::move(http));
  }
  return routes;
}

std::string raw_http(const protocol::HttpRequest& http) {
  std::string text = std::string(http.method) + " " + http.target +
                     " HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: " +
                     std::to_string(http.body.size()) + "\r\n\r\n";
  text.append(http.body.begin(), http.body.end());
  return text;
}

// The status code of a raw HTTP answer ("HTTP/1.1 403 ..."), 0 if there is none.
int http_code(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12)
    return 0;
  return std::stoi(answer.substr(9, 3));
}

// The ErrorReply in the body of a raw HTTP answer.
protocol::ErrorReply http_error(const std::string& answer) {
  const auto body = answer.find("\r\n\r\n");
  REQUIRE(body != std::string::npos);
  protocol::ErrorReply error;
  REQUIRE_FALSE(protocol::decode_error(as_bytes(std::string_view(answer).substr(body + 4)), error));
  return error;
}

}  // namespace

TEST_CASE("security: a client without a certificate is refused by both servers") {
  SecureServers s;
  Identity alice;
  s.enrol("alice", alice.tls.fingerprint);

  SECTION("raw TLS: the handshake ends in an alert, no request is ever read") {
    for (ServerProcess* server : s.both()) {
      RawTls client(*server, nullptr);
      // TLS 1.3: the client side completes; the server's refusal arrives as an alert.
      client.connect();
      client.send(protocol::encode_request_frame(protocol::Hello{}));
      CHECK(client.closed_by_server());
    }
  }
  SECTION("the transports report it as AuthError, on every request kind") {
    for (const std::string kind : {"HTTPS", "TCP"}) {
      ServerProcess& server = kind == "HTTPS" ? s.servers.https : s.servers.tcp;
      for (const auto& request : every_request()) {
        auto transport = connect(kind, server, {});
        CAPTURE(kind, static_cast<int>(protocol::op_of(request)));
        CHECK_THROWS_AS(transport->call(request), AuthError);
      }
    }
  }
}

TEST_CASE("security: a certificate nobody enrolled is refused on every HTTPS route") {
  SecureServers s;
  Identity alice;
  Identity stranger;
  s.enrol("alice", alice.tls.fingerprint);
  auto owner = connect("HTTPS", s.servers.https, alice.certificate());
  expect<protocol::Empty>(owner->call(protocol::PutShares{{{make_id(1), pattern(100, 1)}}}));

  for (const auto& [route, http] : every_route()) {
    CAPTURE(route);
    RawTls client(s.servers.https, &stranger.tls);
    REQUIRE_FALSE(client.connect());
    REQUIRE_FALSE(client.send(raw_http(http)));
    const std::string answer = client.read_all();  // the server closes after answering
    CHECK(http_code(answer) == 403);
    const protocol::ErrorReply error = http_error(answer);
    CHECK(error.status == Status::unauthorized);
    CHECK(error.message.find(stranger.tls.fingerprint) != std::string::npos);
    CHECK(error.message.find(s.servers.https.data_dir().string()) == std::string::npos);
  }
  // Through the transport: every request is answered unauthorized, nothing is stored or revealed.
  auto transport = connect("HTTPS", s.servers.https, stranger.certificate());
  for (const auto& request : every_request())
    expect_error(transport->call(request), Status::unauthorized);
  CHECK(expect<protocol::Presence>(owner->call(protocol::HasShares{{make_id(1)}})).present ==
        std::vector<bool>{true});
}

TEST_CASE("security: a certificate nobody enrolled is refused on every TCP frame type") {
  SecureServers s;
  Identity alice;
  Identity stranger;
  s.enrol("alice", alice.tls.fingerprint);

  SECTION("hello is refused as unauthorized and the connection closes") {
    RawTls client(s.servers.tcp, &stranger.tls);
    REQUIRE_FALSE(client.connect());
    auto reply = client.call(protocol::Hello{});
    REQUIRE(reply);
    const auto error = expect_error(*reply, Status::unauthorized);
    CHECK(error.message.find(stranger.tls.fingerprint) != std::string::npos);
    CHECK(client.closed_by_server());
  }
  SECTION("any other frame first is refused and the connection closes") {
    for (const auto& request : every_request()) {
      if (std::holds_alternative<protocol::Hello>(request))
        continue;
      CAPTURE(static_cast<int>(protocol::op_of(request)));
      RawTls client(s.servers.tcp, &stranger.tls);
      REQUIRE_FALSE(client.connect());
      auto reply = client.call(request);
      REQUIRE(reply);
      REQUIRE(std::holds_alternative<protocol::ErrorReply>(*reply));
      CHECK(std::get<protocol::ErrorReply>(*reply).status != Status::ok);
      CHECK(client.closed_by_server());
    }
  }
  SECTION("the TCP transport reports AuthError naming the fingerprint") {
    auto transport = connect("TCP", s.servers.tcp, stranger.certificate());
    try {
      transport->call(protocol::ListFiles{});
      FAIL("an unenrolled client was served");
    } catch (const AuthError& e) {
      CHECK(std::string(e.what()).find(stranger.tls.fingerprint) != std::string::npos);
    }
  }
}

TEST_CASE("security: a revoked user is refused on its next request on every route and frame") {
  SecureServers s;
  Identity alice;
  s.enrol("alice", alice.tls.fingerprint);

  // Connections that were admitted before the revocation, one per request kind and server.
  std::vector<std::unique_ptr<RawTls>> tcp_clients;
  std::vector<std::unique_ptr<transport::Transport>> https_clients;
  for (std::size_t i = 0; i < every_request().size(); ++i) {
    auto& tcp = tcp_clients.emplace_back(std::make_unique<RawTls>(s.servers.tcp, &alice.tls));
    REQUIRE_FALSE(tcp->connect());
    auto hello = tcp->call(protocol::Hello{});
    REQUIRE(hello);
    expect<protocol::Empty>(*hello);
    auto& https =
        https_clients.emplace_back(connect("HTTPS", s.servers.https, alice.certificate()));
    expect<protocol::FileList>(https->call(protocol::ListFiles{}));
  }

  s.revoke("alice");
  const auto requests = every_request();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    CAPTURE(static_cast<int>(protocol::op_of(requests[i])));
    auto tcp_reply = tcp_clients[i]->call(requests[i]);
    REQUIRE(tcp_reply);
    expect_error(*tcp_reply, Status::unauthorized);
    CHECK(tcp_clients[i]->closed_by_server());
    expect_error(https_clients[i]->call(requests[i]), Status::unauthorized);
  }

  // Enrolled again (say, with a new certificate after a lost laptop), the user's data is back.
  Identity laptop;
  s.enrol("alice", laptop.tls.fingerprint);
  auto again = connect("TCP", s.servers.tcp, laptop.certificate());
  expect<protocol::FileList>(again->call(protocol::ListFiles{}));
  auto old = connect("TCP", s.servers.tcp, alice.certificate());
  CHECK_THROWS_AS(old->call(protocol::ListFiles{}), AuthError);
}

TEST_CASE("security: enrolment takes effect on a running server, and the library says what to do") {
  SecureServers s;
  Home home(s.servers, "bob");
  TempDir work("splitfs-auth");
  write_file(work / "f", "some content");
  try {
    home.client().store(work / "f", "f");
    FAIL("an unenrolled client stored a file");
  } catch (const AuthError& e) {
    const std::string message = e.what();
    CHECK(message.find(home.fingerprint) != std::string::npos);
    CHECK(message.find("splitfs id") != std::string::npos);
  }

  s.enrol("bob", home.fingerprint);
  home.client().store(work / "f", "f");
  home.client().fetch("f", work / "back");
  CHECK(read_file(work / "back") == "some content");

  // The users file holds fingerprints and names only: no key material.
  for (ServerProcess* server : s.both()) {
    const std::string users = read_file(server->data_dir() / "users");
    CHECK(users.find(home.fingerprint) != std::string::npos);
    CHECK(users.find("PRIVATE") == std::string::npos);
    const CommandResult listed = server->command({"users", "list"});
    CHECK(listed.status == 0);
    CHECK(listed.output.find("bob") != std::string::npos);
  }
}

TEST_CASE("security: operator commands validate what they are given") {
  SecureServers s;
  ServerProcess& server = s.servers.tcp;
  const std::string good = "SHA256:" + std::string(64, 'a');
  CHECK(server.command({"users", "add", "../evil", good}).status != 0);
  CHECK(server.command({"users", "add", "/etc/passwd", good}).status != 0);
  CHECK(server.command({"users", "add", "bob", "SHA256:xyz"}).status != 0);
  CHECK(server.command({"users", "add", "bob", good, "--quota", "lots"}).status != 0);
  CHECK(server.command({"users", "revoke", "nobody"}).status != 0);
  REQUIRE(server.command({"users", "add", "bob", good, "--quota", "1.5G"}).status == 0);
  CHECK(server.command({"users", "add", "carol", good}).status != 0);  // bob's certificate
  const CommandResult listed = server.command({"users", "list"});
  CHECK(listed.output.find("1.5 GiB") != std::string::npos);
  CHECK_FALSE(fs::exists(server.data_dir().parent_path() / "evil"));
}
