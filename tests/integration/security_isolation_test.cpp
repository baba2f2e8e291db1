// Isolation between users on both servers: user B cannot list, fetch, overwrite or delete user A's
// objects, cannot tell whether A holds a share (no deduplication across users), and equal files
// of A and B get unrelated ids.
#include <string>
#include <vector>

#include "tests/integration/security_fixture.hpp"

using namespace splitfs;
using namespace splitfs::security_test;
using protocol::Status;

TEST_CASE("security: user B cannot list, fetch, overwrite or delete user A's objects") {
  SecureServers s;
  Identity alice;
  Identity bob;
  s.enrol("alice", alice.tls.fingerprint);
  s.enrol("bob", bob.tls.fingerprint);

  for (const std::string kind : {"HTTPS", "TCP"}) {
    CAPTURE(kind);
    ServerProcess& server = kind == "HTTPS" ? s.servers.https : s.servers.tcp;
    auto a = connect(kind, server, alice.certificate());
    auto b = connect(kind, server, bob.certificate());
    const Id share = make_id(10);
    const Id file = make_id(20);
    const Bytes blob = pattern(5000, 7);
    const Bytes entry = pattern(40, 1);
    const Bytes manifest = pattern(300, 2);
    expect<protocol::Empty>(a->call(protocol::PutShares{{{share, blob}}}));
    expect<protocol::Empty>(a->call(protocol::Commit{file, 3, {{share, 5}}, entry, manifest}));

    // Nothing of A's is visible to B, by listing or by id.
    CHECK(expect<protocol::FileList>(b->call(protocol::ListFiles{})).files.empty());
    CHECK(expect<protocol::Presence>(b->call(protocol::HasShares{{share}})).present ==
          std::vector<bool>{false});
    const auto missing = expect_error(b->call(protocol::GetShares{{share}}), Status::not_found);
    CHECK(missing.missing == std::vector<Id>{share});
    expect_error(b->call(protocol::GetFile{file}), Status::not_found);
    expect_error(b->call(protocol::GetFileInfo{file}), Status::not_found);
    expect_error(b->call(protocol::RemoveFile{file}), Status::not_found);
    // B cannot reference A's share in a commit of its own.
    const auto lacking =
        expect_error(b->call(protocol::Commit{make_id(21), 1, {{share, 5}}, entry, manifest}),
                     Status::missing_shares);
    CHECK(lacking.missing == std::vector<Id>{share});

    // B writing under A's ids only changes B's namespace.
    const Bytes other = pattern(5000, 99);
    expect<protocol::Empty>(b->call(protocol::PutShares{{{share, other}}}));
    expect<protocol::Empty>(
        b->call(protocol::Commit{file, 9, {{share, 5}}, pattern(40, 5), pattern(300, 6)}));
    expect<protocol::Empty>(b->call(protocol::RemoveFile{file}));

    // A's objects are untouched.
    const auto shares = expect<protocol::Shares>(a->call(protocol::GetShares{{share}}));
    REQUIRE(shares.blobs.size() == 1);
    CHECK(shares.blobs[0] == blob);
    const auto record = expect<protocol::FileRecord>(a->call(protocol::GetFile{file}));
    CHECK(record.version == 3);
    CHECK(record.entry == entry);
    CHECK(record.manifest == manifest);
    const auto listed = expect<protocol::FileList>(a->call(protocol::ListFiles{}));
    REQUIRE(listed.files.size() == 1);
    CHECK(listed.files[0].file == file);
  }
}

TEST_CASE("security: two users storing the same file through the library share nothing") {
  SecureServers s;
  Home alice(s.servers, "alice");
  Home bob(s.servers, "bob");
  s.enrol("alice", alice.fingerprint);
  s.enrol("bob", bob.fingerprint);
  TempDir work("splitfs-isolation");
  const std::string content = random_text(std::size_t{300} * 1024, 5);
  write_file(work / "same.bin", content);
  alice.client().store(work / "same.bin", "same.bin");
  bob.client().store(work / "same.bin", "same.bin");

  // Each sees its own file only once, and bob removing his leaves alice's.
  CHECK(alice.client().list().size() == 1);
  CHECK(bob.client().list().size() == 1);
  bob.client().remove("same.bin");
  CHECK(bob.client().list().empty());
  alice.client().fetch("same.bin", work / "back.bin");
  CHECK(read_file(work / "back.bin") == content);

  // The ids of alice's data mean nothing to bob: he holds none of them, even for equal content.
  for (const std::string kind : {"HTTPS", "TCP"}) {
    ServerProcess& server = kind == "HTTPS" ? s.servers.https : s.servers.tcp;
    auto a = connect(kind, server, alice.certificate());
    auto b = connect(kind, server, bob.certificate());
    bob.client().store(work / "same.bin", "again.bin");
    const auto files_a = expect<protocol::FileList>(a->call(protocol::ListFiles{}));
    const auto files_b = expect<protocol::FileList>(b->call(protocol::ListFiles{}));
    REQUIRE(files_a.files.size() == 1);
    REQUIRE(files_b.files.size() == 1);
    CHECK(files_a.files[0].file != files_b.files[0].file);
    expect_error(b->call(protocol::GetFile{files_a.files[0].file}), Status::not_found);
    bob.client().remove("again.bin");
  }
}
