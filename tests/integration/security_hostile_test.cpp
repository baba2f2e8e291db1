// Hostile input on both servers: malformed frames and HTTP requests, junk before TLS, slow and idle
// connections, too many connections of one user. Each gets an error or a closed connection, the
// error text reveals nothing of the server, and a well-behaved client keeps being served meanwhile.
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;
using namespace std::chrono_literals;
using protocol::Status;

namespace {

struct Fixture {
  explicit Fixture(const std::vector<std::string>& extra_args = {}) : s(extra_args) {
    s.enrol("alice", alice.fingerprint);
    s.enrol("mallory", mallory.tls.fingerprint);
  }

  // A well-behaved client stores and reads back a file.
  void well_behaved(const std::string& name) {
    const std::string data =
        random_text(std::size_t{200} * 1024, static_cast<unsigned>(name.size()));
    write_file(work / "in", data);
    alice.client().store(work / "in", name);
    alice.client().fetch(name, work / "out");
    CHECK(read_file(work / "out") == data);
  }

  SecureServers s;
  Home alice{s.servers, "alice"};
  Identity mallory;  // enrolled, and hostile
  TempDir work{"splitfs-hostile"};
};

Bytes text_bytes(std::string_view text) {
  const ByteView view = as_bytes(text);
  return Bytes(view.begin(), view.end());
}

Bytes frame_header(std::uint32_t length, std::uint8_t kind) {
  return {static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
          static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length), kind};
}

// What an error message must never contain: where the server keeps things, or what it runs on.
void reveals_nothing(const std::string& message, const Fixture& f) {
  CAPTURE(message);
  for (const std::string& secret :
       {f.s.servers.https.data_dir().string(), f.s.servers.tcp.data_dir().string(),
        std::string("sqlite"), std::string("SQLITE"), std::string("errno"), std::string("/tmp/"),
        std::string("boost"), std::string("what()")}) {
    CHECK(message.find(secret) == std::string::npos);
  }
  CHECK(message.size() <= protocol::kMaxErrorText);
}

int http_code(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12)
    return 0;
  return std::stoi(answer.substr(9, 3));
}

std::string http_message(const std::string& answer) {
  const auto body = answer.find("\r\n\r\n");
  if (body == std::string::npos)
    return {};
  protocol::ErrorReply error;
  if (protocol::decode_error(as_bytes(std::string_view(answer).substr(body + 4)), error))
    return {};
  return error.message;
}

}  // namespace

TEST_CASE("security: malformed frames get an error or a close; the TCP server keeps serving") {
  Fixture f;
  struct Case {
    std::string what;
    Bytes bytes;
    bool greet;  // send a hello first
  };
  const Id id = make_id(3);
  Bytes truncated_put =
      protocol::encode_request_frame(protocol::PutShares{{{id, pattern(1000, 1)}}});
  truncated_put.erase(truncated_put.end() - 10, truncated_put.end());
  Bytes lying_count = frame_header(9, static_cast<std::uint8_t>(protocol::Op::has_shares));
  for (std::uint8_t b : {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})  // 4 billion ids in 8 bytes
    lying_count.push_back(b);
  Bytes short_id = frame_header(1 + 4 + 16, static_cast<std::uint8_t>(protocol::Op::get_file));
  short_id.resize(short_id.size() + 20, 0xaa);  // a 16-byte "id"
  Bytes trailing = protocol::encode_request_frame(protocol::ListFiles{});
  trailing[3] = 3;
  trailing.push_back(1);
  trailing.push_back(2);
  const std::vector<Case> cases{
      {"a frame cut short, then silence", truncated_put, true},
      {"an oversize length", frame_header(0xffffffffu, 3), true},
      {"a zero length", frame_header(0, 3), true},
      {"an unknown op", {0, 0, 0, 1, 0xee}, true},
      {"op zero", {0, 0, 0, 1, 0}, true},
      {"a count beyond the payload", lying_count, true},
      {"an id of the wrong length", short_id, true},
      {"bytes after the payload", trailing, true},
      {"a huge first frame before hello", frame_header(64u << 20, 3), false},
      // Within the frame bound, but longer than any hello: refused at its header, not after 1 KiB.
      {"a long first frame before hello", frame_header(4096, 3), false},
      {"HTTP spoken to the frame door", text_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
      {"a path as an id",
       [] {
         Bytes b = frame_header(1 + 32, static_cast<std::uint8_t>(protocol::Op::get_file));
         std::string path = "../../../../../../etc/passwd";
         path.resize(32, '\0');
         b.insert(b.end(), path.begin(), path.end());
         return b;
       }(),
       true},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    RawTls client(f.s.servers.tcp, &f.mallory.tls);
    REQUIRE_FALSE(client.connect());
    if (c.greet) {
      auto hello = client.call(protocol::Hello{});
      REQUIRE(hello);
      expect<protocol::Empty>(*hello);
    }
    if (client.send(c.bytes)) {
      // The server answered and closed before the whole input was sent: refused all the same.
      continue;
    }
    if (c.what == "a path as an id") {
      // A well-formed request for an id nobody has: not found, and the connection stays.
      auto reply = client.read_reply(protocol::Op::get_file);
      REQUIRE(reply);
      reveals_nothing(expect_error(*reply, Status::not_found).message, f);
      continue;
    }
    if (c.what == "a frame cut short, then silence") {
      // Nothing to answer yet: the server waits, then its deadline closes the connection.
      const auto started = Clock::now();
      CHECK(client.closed_by_server());
      CHECK(Clock::now() - started < 40s);
      continue;
    }
    auto frame = client.read_frame();
    REQUIRE(frame);
    protocol::ErrorReply error;
    REQUIRE_FALSE(protocol::decode_error(frame->payload, error));
    CHECK(error.status != Status::ok);
    reveals_nothing(error.message, f);
    CHECK(client.closed_by_server());
  }
  f.well_behaved("after-frames");
}

TEST_CASE("security: absurd HTTP requests get 4xx answers; the HTTPS server keeps serving") {
  Fixture f;
  const std::string file = "/v1/files/" + std::string(64, 'a');
  // Requests the server answers without closing on its own.
  const std::string kClose = "Host: x\r\nConnection: close\r\n";
  struct Case {
    std::string what;
    std::string request;
    std::vector<int> codes;  // acceptable answers; empty: the server may just close
  };
  const std::vector<Case> cases{
      {"a header over 8 KiB",
       "GET /v1/files HTTP/1.1\r\nHost: x\r\nX: " + std::string(9000, 'a') + "\r\n\r\n",
       {413}},
      {"ten thousand tiny headers",
       [] {
         std::string r = "GET /v1/files HTTP/1.1\r\nHost: x\r\n";
         for (int i = 0; i < 10000; ++i)
           r += "a:\r\n";
         return r + "\r\n";
       }(),
       {413}},
      {"a body announced at a terabyte",
       "POST /v1/shares HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\nabc",
       {413}},
      {"a negative content length",
       "POST /v1/shares HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
       {400}},
      {"two content lengths",
       "POST /v1/shares HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
       {400}},
      {"an absurd chunk size",
       "POST /v1/shares HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
       "fffffffffffffffff\r\n",
       {400, 413}},
      // 72 KiB, as much as the server buffers unparsed: all of it is read, then refused.
      {"a chunk header that never ends",
       "POST /v1/shares HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" +
           std::string((std::size_t{72} << 10) - 2, 'a'),
       {413}},
      {"a body that does not decode",
       "POST /v1/shares HTTP/1.1\r\n" + kClose + "Content-Length: 5\r\n\r\nhello",
       {400, 413}},
      {"a ../ target",
       "GET /v1/files/../../../etc/passwd HTTP/1.1\r\n" + kClose + "\r\n",
       {400, 501}},
      {"an absolute target", "GET /etc/passwd HTTP/1.1\r\n" + kClose + "\r\n", {501}},
      {"an absolute URL",
       "GET https://evil.example/v1/files HTTP/1.1\r\n" + kClose + "\r\n",
       {501}},
      {"a NUL in the target",
       std::string("GET /v1/files/a\0b HTTP/1.1\r\nHost: x\r\n\r\n", 39),
       {400, 501}},
      {"an id that is not hex",
       "GET /v1/files/" + std::string(64, 'z') + " HTTP/1.1\r\n" + kClose + "\r\n",
       {400}},
      {"an id too long", "GET " + file + "aa HTTP/1.1\r\n" + kClose + "\r\n", {400, 501}},
      {"a target of 7 KiB",
       "GET /v1/" + std::string(7000, 'a') + " HTTP/1.1\r\n" + kClose + "\r\n",
       {501}},
      {"an unknown method", "BREW /v1/files HTTP/1.1\r\n" + kClose + "\r\n", {400, 501}},
      {"a request for another server's path",
       "GET /../tcp/store/index.sqlite HTTP/1.1\r\n" + kClose + "\r\n",
       {400, 501}},
      {"not HTTP at all", "\x16\x03\x01 hello there\r\n\r\n", {400}},
      {"HTTP/0.9", "GET /v1/files\r\n\r\n", {400}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    RawTls client(f.s.servers.https, &f.mallory.tls);
    REQUIRE_FALSE(client.connect());
    client.send(c.request);
    const std::string answer = client.read_all();
    const int code = http_code(answer);
    if (!c.codes.empty()) {
      CAPTURE(answer.substr(0, 200));
      CHECK(std::find(c.codes.begin(), c.codes.end(), code) != c.codes.end());
      reveals_nothing(http_message(answer), f);
    }
    CHECK(client.last_error() != asio::error::timed_out);
  }
  f.well_behaved("after-http");
}

TEST_CASE("security: junk before TLS is dropped by both servers") {
  // A short handshake timeout, so the junk a server can only wait out is cut within the check.
  Fixture f({"--handshake-timeout", "2"});
  for (ServerProcess* server : f.s.both()) {
    for (const std::string& junk :
         {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), std::string(100000, '\x16'),
          std::string("\x16\x03\x03\xff\xff", 5) + std::string(1000, 'a'), std::string(1, '\0')}) {
      PlainSocket socket(*server);
      REQUIRE(socket.connected());
      socket.send(junk);
      CHECK(socket.closed_within(6s));
    }
  }
  f.well_behaved("after-junk");
}

TEST_CASE("security: slowloris and a thousand idle connections do not stop a well-behaved client",
          "[long]") {
  Fixture f;
  // A thousand connections that never say anything (no TLS at all), on each server.
  std::vector<std::unique_ptr<PlainSocket>> idle;
  for (int i = 0; i < 1000; ++i) {
    for (ServerProcess* server : f.s.both())
      idle.push_back(std::make_unique<PlainSocket>(*server));
  }
  // Enrolled slowloris clients: one byte of a request every two seconds, on each door.
  std::atomic<bool> done{false};
  std::vector<double> cut_after(2, -1);
  std::vector<std::thread> slow;
  for (std::size_t i = 0; i < 2; ++i) {
    slow.emplace_back([&, i] {
      ServerProcess& server = i == 0 ? f.s.servers.https : f.s.servers.tcp;
      RawTls client(server, &f.mallory.tls);
      if (client.connect())
        return;
      std::string request;
      if (i == 0) {
        request = "GET /v1/files HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(100, 'a');
      } else {
        auto hello = client.call(protocol::Hello{});
        if (!hello)
          return;
        const Bytes frame = protocol::encode_request_frame(protocol::ListFiles{});
        request = std::string(frame.begin(), frame.end()) + std::string(100, 'a');
      }
      const auto started = Clock::now();
      for (char c : request) {
        if (done || client.send(std::string(1, c)))
          break;
        std::this_thread::sleep_for(2s);
      }
      cut_after[i] = std::chrono::duration<double>(Clock::now() - started).count();
    });
  }

  // Meanwhile, the well-behaved client stores and fetches, more than once.
  const auto started = Clock::now();
  f.well_behaved("busy-1");
  f.well_behaved("busy-2");
  CHECK(Clock::now() - started < 30s);
  for (auto& thread : slow)
    thread.join();
  done = true;
  // The slowloris were cut off well before they could finish (50+ bytes at 2 s each).
  for (double seconds : cut_after) {
    CHECK(seconds > 0);
    CHECK(seconds < 30);
  }
  f.well_behaved("busy-3");
}

TEST_CASE("security: one user's connections are capped; other users are unaffected") {
  Fixture f({"--max-user-connections", "3"});
  for (const std::string kind : {"HTTPS", "TCP"}) {
    CAPTURE(kind);
    ServerProcess& server = kind == "HTTPS" ? f.s.servers.https : f.s.servers.tcp;
    std::vector<std::unique_ptr<transport::Transport>> held;
    for (int i = 0; i < 3; ++i) {
      held.push_back(connect(kind, server, f.mallory.certificate()));
      expect<protocol::FileList>(held.back()->call(protocol::ListFiles{}));
    }
    auto fourth = connect(kind, server, f.mallory.certificate());
    if (kind == "HTTPS") {
      expect_error(fourth->call(protocol::ListFiles{}), Status::busy);
    } else {
      CHECK_THROWS_AS(fourth->call(protocol::ListFiles{}), ServerUnavailable);
    }
  }
  f.well_behaved("capped");
}

TEST_CASE("security: unauthenticated connections are dropped oldest first, never the enrolled") {
  Fixture f({"--max-unauthenticated", "20", "--max-connections", "40"});
  // Strangers fill every unauthenticated slot, many times over, on both servers.
  Identity stranger;
  std::vector<std::unique_ptr<PlainSocket>> crowd;
  for (int i = 0; i < 100; ++i) {
    for (ServerProcess* server : f.s.both())
      crowd.push_back(std::make_unique<PlainSocket>(*server));
  }
  std::vector<std::unique_ptr<RawTls>> strangers;
  for (int i = 0; i < 30; ++i) {
    strangers.push_back(std::make_unique<RawTls>(f.s.servers.tcp, &stranger.tls));
    strangers.back()->connect();
  }
  f.well_behaved("crowded");
  // The oldest of the crowd were closed to make room.
  CHECK(crowd.front()->closed_within(5s));
}
