#include "service/service.hpp"

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include <catch2/catch.hpp>

#include "protocol/codec.hpp"

using namespace splitfs;
using protocol::Status;

namespace {

Id make_id(std::uint8_t seed) {
  Id id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>(seed + i);
  return id;
}

Bytes bytes_of(std::string_view text) {
  return Bytes(text.begin(), text.end());
}

// An in-memory store that records the user of each call and can be told to fail.
class FakeStore : public store::Store {
 public:
  std::map<std::pair<std::string, Id>, Bytes> shares;
  struct File {
    store::FileRecord record;
    std::vector<store::ShareRef> refs;
  };
  std::map<std::pair<std::string, Id>, File> files;
  std::set<Id> corrupt_shares;
  std::error_code forced;  // returned by every error-code method when set
  bool throw_on_list = false;
  std::set<std::string> users;

  std::vector<bool> has_shares(std::string_view user, std::span<const Id> ids) override {
    users.emplace(user);
    std::vector<bool> out;
    for (const auto& id : ids)
      out.push_back(shares.count({std::string(user), id}) > 0);
    return out;
  }
  std::error_code put_shares(std::string_view user,
                             std::span<const store::ShareInput> inputs) override {
    users.emplace(user);
    if (forced)
      return forced;
    for (const auto& in : inputs) {
      shares[{std::string(user), in.id}] = Bytes(in.data.begin(), in.data.end());
    }
    return {};
  }
  std::error_code get_share(std::string_view user, const Id& id, Bytes& out) override {
    users.emplace(user);
    if (forced)
      return forced;
    if (corrupt_shares.count(id))
      return store::Errc::corrupt;
    auto it = shares.find({std::string(user), id});
    if (it == shares.end())
      return store::Errc::not_found;
    out = it->second;
    return {};
  }
  std::error_code commit(std::string_view user, const Id& file, std::uint64_t version,
                         std::span<const store::ShareRef> refs, ByteView entry, ByteView manifest,
                         std::vector<Id>& missing) override {
    users.emplace(user);
    if (forced)
      return forced;
    for (const auto& ref : refs) {
      if (!shares.count({std::string(user), ref.id}))
        missing.push_back(ref.id);
    }
    if (!missing.empty())
      return store::Errc::missing_shares;
    auto existing = files.find({std::string(user), file});
    if (existing != files.end() && existing->second.record.version >= version) {
      return store::Errc::conflict;
    }
    auto& slot = files[{std::string(user), file}];
    slot.record = {version, Bytes(entry.begin(), entry.end()),
                   Bytes(manifest.begin(), manifest.end())};
    slot.refs.assign(refs.begin(), refs.end());
    return {};
  }
  std::error_code get_file(std::string_view user, const Id& file, store::FileRecord& out) override {
    users.emplace(user);
    if (forced)
      return forced;
    auto it = files.find({std::string(user), file});
    if (it == files.end())
      return store::Errc::not_found;
    out = it->second.record;
    return {};
  }
  std::vector<store::FileSummary> list_files(std::string_view user) override {
    users.emplace(user);
    if (throw_on_list)
      throw std::runtime_error("SELECT * FROM files failed at /secret/path");
    std::vector<store::FileSummary> out;
    for (const auto& [key, file] : files) {
      if (key.first == user)
        out.push_back({key.second, file.record.version, file.record.entry});
    }
    return out;
  }
  std::error_code remove_file(std::string_view user, const Id& file) override {
    users.emplace(user);
    if (forced)
      return forced;
    return files.erase({std::string(user), file}) ? std::error_code{} : store::Errc::not_found;
  }
  std::error_code file_info(std::string_view user, const Id& file, store::FileInfo& out) override {
    users.emplace(user);
    if (forced)
      return forced;
    auto it = files.find({std::string(user), file});
    if (it == files.end())
      return store::Errc::not_found;
    out.version = it->second.record.version;
    out.shares = it->second.refs.size();
    out.chunks = 0;
    out.stored_bytes = 0;
    for (const auto& ref : it->second.refs) {
      out.chunks += ref.chunks;
      out.stored_bytes += shares[{std::string(user), ref.id}].size();
    }
    return {};
  }
};

protocol::ErrorReply as_error(const protocol::Reply& reply) {
  REQUIRE(std::holds_alternative<protocol::ErrorReply>(reply));
  return std::get<protocol::ErrorReply>(reply);
}

// Error texts must not leak how the server is built.
void check_reveals_nothing(const protocol::ErrorReply& error) {
  CHECK(error.message.find('/') == std::string::npos);
  CHECK(error.message.find("SELECT") == std::string::npos);
  CHECK(error.message.find("sqlite") == std::string::npos);
  CHECK(!error.message.empty());
  CHECK(error.message.size() <= protocol::kMaxErrorText);
}

}  // namespace

TEST_CASE("hello accepts this protocol version only") {
  FakeStore store;
  service::Service service(store);
  CHECK(std::holds_alternative<protocol::Empty>(service.handle("u", protocol::Hello{})));
  auto reply = service.handle("u", protocol::Hello{protocol::kVersion + 1});
  CHECK(as_error(reply).status == Status::unsupported);
}

TEST_CASE("shares go in, are reported present and come back in request order") {
  FakeStore store;
  service::Service service(store);
  const Id a = make_id(1);
  const Id b = make_id(2);
  const Id c = make_id(3);

  auto put =
      service.handle("u", protocol::PutShares{{{a, bytes_of("alpha")}, {b, bytes_of("beta")}}});
  REQUIRE(std::holds_alternative<protocol::Empty>(put));

  auto has = service.handle("u", protocol::HasShares{{b, c, a}});
  REQUIRE(std::holds_alternative<protocol::Presence>(has));
  CHECK(std::get<protocol::Presence>(has).present == std::vector<bool>{true, false, true});

  auto got = service.handle("u", protocol::GetShares{{b, a, b}});
  REQUIRE(std::holds_alternative<protocol::Shares>(got));
  CHECK(std::get<protocol::Shares>(got).blobs ==
        std::vector<Bytes>{bytes_of("beta"), bytes_of("alpha"), bytes_of("beta")});
}

TEST_CASE("get_shares lists every missing id, and corruption wins") {
  FakeStore store;
  service::Service service(store);
  const Id a = make_id(1);
  const Id b = make_id(2);
  const Id c = make_id(3);
  service.handle("u", protocol::PutShares{{{a, bytes_of("alpha")}}});

  const auto missing = as_error(service.handle("u", protocol::GetShares{{b, a, c}}));
  CHECK(missing.status == Status::not_found);
  CHECK(missing.missing == std::vector<Id>{b, c});

  store.corrupt_shares.insert(a);
  const auto corrupt = as_error(service.handle("u", protocol::GetShares{{b, a}}));
  CHECK(corrupt.status == Status::corrupt);
  check_reveals_nothing(corrupt);
}

TEST_CASE("commit, get_file, file_info, list and remove follow the store") {
  FakeStore store;
  service::Service service(store);
  const Id file = make_id(50);
  const Id share = make_id(7);
  service.handle("u", protocol::PutShares{{{share, bytes_of("0123456789")}}});

  protocol::Commit commit{file, 1, {{share, 3}}, bytes_of("entry"), bytes_of("manifest")};
  REQUIRE(std::holds_alternative<protocol::Empty>(service.handle("u", commit)));

  auto record = service.handle("u", protocol::GetFile{file});
  REQUIRE(std::holds_alternative<protocol::FileRecord>(record));
  CHECK(std::get<protocol::FileRecord>(record) ==
        protocol::FileRecord{1, bytes_of("entry"), bytes_of("manifest")});

  auto info = service.handle("u", protocol::GetFileInfo{file});
  REQUIRE(std::holds_alternative<protocol::FileInfo>(info));
  CHECK(std::get<protocol::FileInfo>(info) == protocol::FileInfo{1, 1, 3, 10});

  auto list = service.handle("u", protocol::ListFiles{});
  REQUIRE(std::holds_alternative<protocol::FileList>(list));
  CHECK(std::get<protocol::FileList>(list).files ==
        std::vector<protocol::FileListItem>{{file, 1, bytes_of("entry")}});

  CHECK(as_error(service.handle("u", commit)).status == Status::conflict);

  REQUIRE(std::holds_alternative<protocol::Empty>(service.handle("u", protocol::RemoveFile{file})));
  CHECK(as_error(service.handle("u", protocol::GetFile{file})).status == Status::not_found);
  CHECK(as_error(service.handle("u", protocol::RemoveFile{file})).status == Status::not_found);
  CHECK(as_error(service.handle("u", protocol::GetFileInfo{file})).status == Status::not_found);
}

TEST_CASE("a commit naming shares the server lacks lists them") {
  FakeStore store;
  service::Service service(store);
  const Id held = make_id(1);
  const Id lacking = make_id(2);
  service.handle("u", protocol::PutShares{{{held, bytes_of("x")}}});
  protocol::Commit commit{make_id(9), 1, {{held, 1}, {lacking, 1}}, {}, {}};
  const auto error = as_error(service.handle("u", commit));
  CHECK(error.status == Status::missing_shares);
  CHECK(error.missing == std::vector<Id>{lacking});
}

TEST_CASE("the user flows through to the store") {
  FakeStore store;
  service::Service service(store);
  service.handle("alice", protocol::PutShares{{{make_id(1), bytes_of("a")}}});
  CHECK(store.users == std::set<std::string>{"alice"});
  auto has = service.handle("bob", protocol::HasShares{{make_id(1)}});
  CHECK(std::get<protocol::Presence>(has).present == std::vector<bool>{false});
}

TEST_CASE("disk failures and exceptions become generic internal errors") {
  FakeStore store;
  service::Service service(store);
  store.forced = store::Errc::io;
  for (const protocol::Request& request : std::vector<protocol::Request>{
           protocol::PutShares{{{make_id(1), bytes_of("a")}}}, protocol::GetShares{{make_id(1)}},
           protocol::GetFile{make_id(2)}, protocol::RemoveFile{make_id(2)},
           protocol::GetFileInfo{make_id(2)}, protocol::Commit{make_id(2), 1, {}, {}, {}}}) {
    const auto error = as_error(service.handle("u", request));
    CHECK(error.status == Status::internal);
    check_reveals_nothing(error);
  }
  store.forced = std::make_error_code(std::errc::no_space_on_device);
  CHECK(as_error(service.handle("u", protocol::GetFile{make_id(2)})).status == Status::internal);

  store.forced = {};
  store.throw_on_list = true;
  const auto thrown = as_error(service.handle("u", protocol::ListFiles{}));
  CHECK(thrown.status == Status::internal);
  check_reveals_nothing(thrown);
}

TEST_CASE("a store out of space is answered as such, with nothing of the store in the text") {
  FakeStore store;
  service::Service service(store);
  store.forced = store::Errc::no_space;
  for (const protocol::Request& request :
       std::vector<protocol::Request>{protocol::PutShares{{{make_id(1), bytes_of("a")}}},
                                      protocol::Commit{make_id(2), 1, {}, {}, {}}}) {
    const auto error = as_error(service.handle("u", request));
    CHECK(error.status == Status::quota_exceeded);
    CHECK(error.message.find("out of storage space") != std::string::npos);
    CHECK(error.message.find("intact") != std::string::npos);
    check_reveals_nothing(error);
  }
}

TEST_CASE("oversized shares are refused before reaching the store") {
  FakeStore store;
  service::Service service(store);
  Bytes big(protocol::kMaxShareBytes + 1, 0x5a);
  const auto error = as_error(service.handle("u", protocol::PutShares{{{make_id(1), big}}}));
  CHECK(error.status == Status::too_large);
  CHECK(store.shares.empty());
}

TEST_CASE("decode failures map to statuses") {
  CHECK(service::decode_failure(protocol::DecodeErrc::unknown_op).status == Status::unsupported);
  CHECK(service::decode_failure(protocol::DecodeErrc::too_large).status == Status::too_large);
  CHECK(service::decode_failure(protocol::DecodeErrc::truncated).status == Status::bad_request);
  CHECK(service::decode_failure(protocol::DecodeErrc::invalid_value).status == Status::bad_request);
}
