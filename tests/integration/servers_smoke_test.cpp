// Both server doors end to end, below the client library: a raw Asio TLS client speaks frames to
// the TCP server and libcurl speaks HTTP to the HTTPS server, both pinned to the printed
// fingerprint. Also checks that bad input gets an answer and never takes a server down.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include <curl/curl.h>
#include <catch2/catch.hpp>

#include "protocol/codec.hpp"
#include "tests/support/raw_tls.hpp"
#include "tests/support/servers.hpp"
#include "tls/identity.hpp"

using namespace splitfs;
using protocol::Status;
using splitfs::testing::RawTls;
using splitfs::testing::ServerProcess;
using splitfs::testing::TestServers;

namespace {

Id make_id(std::uint8_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>((std::size_t{seed} * 31) + i);
  return id;
}

Bytes pattern(std::size_t size, std::uint8_t seed) {
  Bytes out(size);
  for (std::size_t i = 0; i < size; ++i)
    out[i] = static_cast<std::uint8_t>(seed + i * 7);
  return out;
}

template <typename T>
T expect(const protocol::Reply& reply) {
  if (const auto* error = std::get_if<protocol::ErrorReply>(&reply)) {
    FAIL("server answered status " << static_cast<int>(error->status) << ": " << error->message);
  }
  REQUIRE(std::holds_alternative<T>(reply));
  return std::get<T>(reply);
}

protocol::ErrorReply expect_error(const protocol::Reply& reply) {
  REQUIRE(std::holds_alternative<protocol::ErrorReply>(reply));
  return std::get<protocol::ErrorReply>(reply);
}

// A raw connection's reply, which must have come before the connection ended.
template <typename T>
T expect(const std::optional<protocol::Reply>& reply) {
  REQUIRE(reply);
  return expect<T>(*reply);
}

protocol::ErrorReply expect_error(const std::optional<protocol::Reply>& reply) {
  REQUIRE(reply);
  return expect_error(*reply);
}

// One libcurl easy handle (so one kept-alive connection) pinned to a fingerprint.
class HttpClient {
 public:
  struct Response {
    CURLcode code = CURLE_OK;
    long status = 0;
    std::string content_type;
    Bytes body;
  };

  HttpClient(const ServerProcess& server, std::string expected_fingerprint)
      : curl_(curl_easy_init(), &curl_easy_cleanup),
        base_("https://" + server.host() + ":" + std::to_string(server.port())) {
    REQUIRE(curl_);
    pin_.expected = std::move(expected_fingerprint);
  }
  explicit HttpClient(const ServerProcess& server) : HttpClient(server, server.fingerprint()) {}

  Response send(const std::string& method, const std::string& target, const Bytes& body) {
    CURL* curl = curl_.get();
    Response response;
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/octet-stream");
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_guard(headers,
                                                                             &curl_slist_free_all);
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, (base_ + target).c_str());
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (!body.empty()) {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, &HttpClient::pin_context);
    curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, &pin_);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &HttpClient::collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
    // A server that ignored Expect: 100-continue would show as a 10 s stall.
    curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    response.code = curl_easy_perform(curl);
    if (response.code == CURLE_OK) {
      curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
      const char* type = nullptr;
      curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
      if (type)
        response.content_type = type;
    }
    return response;
  }

  protocol::Reply call(const protocol::Request& request) {
    protocol::HttpRequest http = protocol::to_http(request);
    Response response = send(std::string(http.method), http.target, http.body);
    REQUIRE(response.code == CURLE_OK);
    CHECK(response.content_type == "application/octet-stream");
    protocol::Reply reply;
    REQUIRE_FALSE(protocol::decode_http_reply(
        protocol::op_of(request), static_cast<unsigned>(response.status), response.body, reply));
    return reply;
  }

  long new_connections() {
    long count = -1;
    curl_easy_getinfo(curl_.get(), CURLINFO_NUM_CONNECTS, &count);
    return count;
  }
  const tls::Pin& pin() const { return pin_; }

 private:
  static CURLcode pin_context(CURL*, void* ssl_ctx, void* pin) {
    try {
      tls::pin_server_certificate(static_cast<SSL_CTX*>(ssl_ctx), static_cast<tls::Pin*>(pin));
      return CURLE_OK;
    } catch (...) {
      return CURLE_SSL_CERTPROBLEM;
    }
  }
  static size_t collect(char* data, size_t size, size_t count, void* out) {
    auto* body = static_cast<Bytes*>(out);
    body->insert(body->end(), data, data + size * count);
    return size * count;
  }

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl_;
  std::string base_;
  tls::Pin pin_;
};

// Stores two shares, commits a file made of them and reads everything back.
template <typename Client>
void exercise_file_operations(Client& client) {
  const Id first = make_id(1);
  const Id second = make_id(2);
  const Id absent = make_id(3);
  const Id file = make_id(9);
  // Over 1 MiB so that curl asks for 100-continue.
  const Bytes first_blob = pattern(std::size_t{1536} * 1024, 5);
  const Bytes second_blob = pattern(700, 6);

  expect<protocol::Empty>(
      client.call(protocol::PutShares{{{first, first_blob}, {second, second_blob}}}));

  const auto& presence =
      expect<protocol::Presence>(client.call(protocol::HasShares{{second, absent, first}}));
  CHECK(presence.present == std::vector<bool>{true, false, true});

  const auto& shares = expect<protocol::Shares>(client.call(protocol::GetShares{{second, first}}));
  REQUIRE(shares.blobs.size() == 2);
  CHECK(shares.blobs[0] == second_blob);
  CHECK(shares.blobs[1] == first_blob);

  auto missing = expect_error(client.call(protocol::GetShares{{first, absent}}));
  CHECK(missing.status == Status::not_found);
  CHECK(missing.missing == std::vector<Id>{absent});

  const Bytes entry = pattern(40, 1);
  const Bytes manifest = pattern(300, 2);
  protocol::Commit commit{file, 1, {{first, 1536}, {second, 1}}, entry, manifest};
  expect<protocol::Empty>(client.call(commit));
  CHECK(expect_error(client.call(commit)).status == Status::conflict);

  protocol::Commit dangling{make_id(10), 1, {{absent, 1}}, entry, manifest};
  auto lacking = expect_error(client.call(dangling));
  CHECK(lacking.status == Status::missing_shares);
  CHECK(lacking.missing == std::vector<Id>{absent});

  const auto& record = expect<protocol::FileRecord>(client.call(protocol::GetFile{file}));
  CHECK(record.version == 1);
  CHECK(record.entry == entry);
  CHECK(record.manifest == manifest);

  const auto& info = expect<protocol::FileInfo>(client.call(protocol::GetFileInfo{file}));
  CHECK(info.version == 1);
  CHECK(info.shares == 2);
  CHECK(info.chunks == 1537);
  CHECK(info.stored_bytes == first_blob.size() + second_blob.size());

  const auto& list = expect<protocol::FileList>(client.call(protocol::ListFiles{}));
  REQUIRE(list.files.size() == 1);
  CHECK(list.files[0].file == file);
  CHECK(list.files[0].entry == entry);

  CHECK(expect_error(client.call(protocol::GetFile{absent})).status == Status::not_found);
}

}  // namespace

TEST_CASE("TCP server: protocol operations over pinned TLS") {
  TestServers servers;
  RawTls client(servers.tcp);
  REQUIRE_FALSE(client.connect());
  CHECK(client.pin().presented == servers.tcp.fingerprint());
  expect<protocol::Empty>(client.call(protocol::Hello{}));
  exercise_file_operations(client);

  SECTION("pipelined requests are answered in order") {
    Bytes both = protocol::encode_request_frame(protocol::HasShares{{make_id(1)}});
    Bytes second = protocol::encode_request_frame(protocol::GetFileInfo{make_id(9)});
    both.insert(both.end(), second.begin(), second.end());
    REQUIRE_FALSE(client.send(both));
    CHECK(expect<protocol::Presence>(client.read_reply(protocol::Op::has_shares)).present ==
          std::vector<bool>{true});
    CHECK(expect<protocol::FileInfo>(client.read_reply(protocol::Op::file_info)).version == 1);
  }
  SECTION("remove_file drops the file") {
    expect<protocol::Empty>(client.call(protocol::RemoveFile{make_id(9)}));
    CHECK(expect_error(client.call(protocol::GetFile{make_id(9)})).status == Status::not_found);
  }
  SECTION("data and identity survive a restart") {
    const std::string fingerprint = servers.tcp.fingerprint();
    CHECK(servers.tcp.stop() == 0);
    servers.tcp.restart();
    CHECK(servers.tcp.fingerprint() == fingerprint);
    RawTls again(servers.tcp);
    REQUIRE_FALSE(again.connect());
    expect<protocol::Empty>(again.call(protocol::Hello{}));
    CHECK(expect<protocol::FileRecord>(again.call(protocol::GetFile{make_id(9)})).version == 1);
  }
}

TEST_CASE("TCP server: bad input is answered, the connection closed, the server unharmed") {
  TestServers servers;

  SECTION("a request before hello") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    auto error = expect_error(client.call(protocol::ListFiles{}));
    CHECK(error.status == Status::bad_request);
    CHECK(client.closed_by_server());
  }
  SECTION("a hello with another protocol version") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    auto error = expect_error(client.call(protocol::Hello{protocol::kVersion + 1}));
    CHECK(error.status == Status::unsupported);
    CHECK(client.closed_by_server());
  }
  SECTION("junk bytes") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    REQUIRE_FALSE(client.send(as_bytes(junk)));
    auto error = expect_error(client.read_reply(protocol::Op::hello));
    CHECK(error.status != Status::ok);
    CHECK(client.closed_by_server());
  }
  SECTION("a frame with an unknown op") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    expect<protocol::Empty>(client.call(protocol::Hello{}));
    const Bytes frame{0, 0, 0, 2, 0xee, 0};
    REQUIRE_FALSE(client.send(frame));
    CHECK(expect_error(client.read_reply(protocol::Op::hello)).status == Status::unsupported);
    CHECK(client.closed_by_server());
  }
  SECTION("a truncated payload") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    expect<protocol::Empty>(client.call(protocol::Hello{}));
    const Bytes frame{0, 0, 0, 3, static_cast<std::uint8_t>(protocol::Op::has_shares), 0, 0};
    REQUIRE_FALSE(client.send(frame));
    CHECK(expect_error(client.read_reply(protocol::Op::has_shares)).status == Status::bad_request);
    CHECK(client.closed_by_server());
  }
  SECTION("an oversize frame header") {
    RawTls client(servers.tcp);
    REQUIRE_FALSE(client.connect());
    expect<protocol::Empty>(client.call(protocol::Hello{}));
    const std::uint32_t length = static_cast<std::uint32_t>(protocol::kMaxMessageBytes + 1);
    const Bytes header{static_cast<std::uint8_t>(length >> 24),
                       static_cast<std::uint8_t>(length >> 16),
                       static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length),
                       static_cast<std::uint8_t>(protocol::Op::put_shares)};
    REQUIRE_FALSE(client.send(header));
    CHECK(expect_error(client.read_reply(protocol::Op::put_shares)).status == Status::too_large);
    CHECK(client.closed_by_server());
  }
  SECTION("a client pinned to another fingerprint is refused") {
    const std::string wrong = servers.https.fingerprint();
    RawTls client(servers.tcp, wrong);
    CHECK(client.connect());
    CHECK(client.pin().presented == servers.tcp.fingerprint());
  }

  RawTls after(servers.tcp);
  REQUIRE_FALSE(after.connect());
  expect<protocol::Empty>(after.call(protocol::Hello{}));
  expect<protocol::FileList>(after.call(protocol::ListFiles{}));
}

TEST_CASE("TCP server: connections over the cap are closed, the others served") {
  splitfs::testing::TempDir root;
  ServerProcess server("splitfs-tcp-server", root / "tcp", {"--max-connections", "2"});
  auto first = std::make_unique<RawTls>(server);
  RawTls second(server);
  REQUIRE_FALSE(first->connect());
  REQUIRE_FALSE(second.connect());
  expect<protocol::Empty>(first->call(protocol::Hello{}));
  expect<protocol::Empty>(second.call(protocol::Hello{}));

  RawTls third(server);
  CHECK(third.connect());
  expect<protocol::FileList>(second.call(protocol::ListFiles{}));

  // Once a connection ends, its slot is free again (the server notices the close asynchronously).
  first.reset();
  bool served = false;
  for (int attempt = 0; attempt < 50 && !served; ++attempt) {
    RawTls next(server);
    if (!next.connect()) {
      expect<protocol::Empty>(next.call(protocol::Hello{}));
      served = true;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  CHECK(served);
}

TEST_CASE("HTTPS server: protocol operations over pinned TLS with keep-alive") {
  TestServers servers;
  HttpClient client(servers.https);
  const auto started = std::chrono::steady_clock::now();
  expect<protocol::Empty>(client.call(protocol::Hello{}));
  CHECK(client.pin().presented == servers.https.fingerprint());
  exercise_file_operations(client);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(8));
  CHECK(client.new_connections() == 0);  // the last call reused the first connection

  expect<protocol::Empty>(client.call(protocol::RemoveFile{make_id(9)}));
  CHECK(expect_error(client.call(protocol::GetFileInfo{make_id(9)})).status == Status::not_found);

  auto old_version = expect_error(client.call(protocol::Hello{protocol::kVersion + 1}));
  CHECK(old_version.status == Status::unsupported);
}

TEST_CASE("HTTPS server: bad requests get 4xx answers and the server stays up") {
  TestServers servers;
  HttpClient client(servers.https);

  SECTION("a body that does not decode") {
    auto response = client.send("POST", "/v1/shares/has", Bytes{1, 2, 3});
    REQUIRE(response.code == CURLE_OK);
    CHECK(response.status == 400);
    protocol::ErrorReply error;
    REQUIRE_FALSE(protocol::decode_error(response.body, error));
    CHECK(error.status == Status::bad_request);
  }
  SECTION("a malformed file id") {
    auto response = client.send("GET", "/v1/files/not-hex", {});
    REQUIRE(response.code == CURLE_OK);
    CHECK(response.status == 400);
  }
  SECTION("an unknown route") {
    auto response = client.send("GET", "/v2/everything", {});
    REQUIRE(response.code == CURLE_OK);
    CHECK(response.status == protocol::http_status(Status::unsupported));
  }
  SECTION("an oversize header") {
    RawTls raw(servers.https);
    REQUIRE_FALSE(raw.connect());
    const std::string request =
        "GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n";
    REQUIRE_FALSE(raw.send(as_bytes(request)));
    const std::string answer = raw.read_all();
    CHECK(answer.rfind("HTTP/1.1 413", 0) == 0);
  }
  SECTION("a request that is not HTTP") {
    RawTls raw(servers.https);
    REQUIRE_FALSE(raw.connect());
    const std::string junk = "BLAH\x01\x02 nonsense\r\n\r\n";
    REQUIRE_FALSE(raw.send(as_bytes(junk)));
    const std::string answer = raw.read_all();
    CHECK(answer.rfind("HTTP/1.1 400", 0) == 0);
    CHECK(answer.find("Content-Type: application/octet-stream") != std::string::npos);
  }
  SECTION("a client pinned to another fingerprint is refused") {
    HttpClient impostor(servers.https, servers.tcp.fingerprint());
    auto response = impostor.send("GET", "/v1/files", {});
    CHECK(response.code != CURLE_OK);
    CHECK(impostor.pin().presented == servers.https.fingerprint());
  }

  HttpClient after(servers.https);
  expect<protocol::FileList>(after.call(protocol::ListFiles{}));
}

TEST_CASE("servers stop gracefully on SIGTERM and SIGINT") {
  TestServers servers;
  HttpClient client(servers.https);
  expect<protocol::FileList>(client.call(protocol::ListFiles{}));
  RawTls idle(servers.tcp);
  REQUIRE_FALSE(idle.connect());
  expect<protocol::Empty>(idle.call(protocol::Hello{}));

  // The kept-alive HTTPS connection and the idle TCP connection must not hold the servers up.
  const auto started = std::chrono::steady_clock::now();
  CHECK(servers.https.stop() == 0);
  servers.tcp.signal(SIGINT);
  CHECK(idle.closed_by_server());
  CHECK(servers.tcp.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(4));
}
