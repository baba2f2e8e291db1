// Operating a shared store (Swift + PostgreSQL from the ctest fixture): the servers' commands
// stats, check and compact given --backend and --index work on the shared store beside the running
// servers, and check reports a pack object damaged behind the store's back (overwritten in Swift
// through the object store client). Quotas are one count in the index for every process that
// serves the store, not one per process.
#include <algorithm>
#include <catch2/catch.hpp>
#include <splitfs/client.hpp>
#include <splitfs/errors.hpp>
#include <string>
#include <vector>

#include "objectstore/s3.hpp"
#include "store/pack.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::Enrol;
using splitfs::testing::kTestUser;
using splitfs::testing::random_string;
using splitfs::testing::read_file;
using splitfs::testing::ServerProcess;
using splitfs::testing::shared_store_args;
using splitfs::testing::TempDir;
using splitfs::testing::test_client_fingerprint;
using splitfs::testing::test_engines;
using splitfs::testing::write_file;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A line of the commands' reports (store/maintenance.cpp): the label padded to 24 columns.
std::string row(const std::string& label, const std::string& value) {
  std::string text = "  " + label;
  text.resize(std::max<std::size_t>(text.size() + 1, 24), ' ');
  return text + value;
}

std::vector<std::string> with(std::vector<std::string> args, const std::vector<std::string>& more) {
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

fs::path init_home(const fs::path& home, const ServerProcess& https, const ServerProcess& tcp,
                   bool keep_key = false) {
  splitfs::InitOptions options = splitfs::testing::pinned_options(https, tcp);
  options.force = keep_key;
  splitfs::init(home, options);
  return home;
}

// The bucket that `args` (shared_store_args) name, through the object store client.
splitfs::objectstore::Client bucket_of(const std::vector<std::string>& args) {
  std::string error;
  auto location = splitfs::objectstore::parse_location(args.at(1), error);
  REQUIRE(location);
  return splitfs::objectstore::Client(*location, splitfs::objectstore::load_credentials({}));
}

}  // namespace

TEST_CASE("stats, check and compact work on a shared store beside its running servers",
          "[scaleout][operator]") {
  TempDir root("splitfs-scaleout-operator");
  const auto https_args = shared_store_args(test_engines());
  const auto tcp_args = shared_store_args(test_engines());
  ServerProcess https("splitfs-https-server", root / "https", https_args);
  ServerProcess tcp("splitfs-tcp-server", root / "tcp", tcp_args);
  splitfs::Client client(init_home(root / "home", https, tcp));
  const std::string kept = random_string(3 * client.segment_bytes() + 11, 1);
  const std::string dropped = random_string(2 * std::size_t{client.segment_bytes()}, 2);
  write_file(root / "kept", kept);
  write_file(root / "dropped", dropped);
  client.store(root / "kept", "kept");
  client.store(root / "dropped", "dropped");

  // The data folders hold no local store: without --backend the commands have nothing to act on.
  CHECK(https.command({"stats"}).status != 0);

  for (auto [server, args] : {std::pair{&https, &https_args}, std::pair{&tcp, &tcp_args}}) {
    const auto stats = server->command(with(*args, {"stats"}));
    INFO(stats.output);
    CHECK(stats.status == 0);
    CHECK(contains(stats.output, "shared store s3://"));
    CHECK(contains(stats.output, row("files", "2")));
    const auto check = server->command(with(*args, {"check"}));
    INFO(check.output);
    CHECK(check.status == 0);
    CHECK(contains(check.output, "consistent"));
  }

  // Compaction beside the running servers reclaims what the removal left.
  client.remove("dropped");
  const auto compact = https.command(with(https_args, {"compact", "--grace", "0"}));
  INFO(compact.output);
  CHECK(compact.status == 0);
  CHECK(contains(compact.output, "shared store s3://"));
  const auto after = https.command(with(https_args, {"stats"}));
  INFO(after.output);
  CHECK(contains(after.output, row("files", "1")));
  CHECK(contains(after.output, row("unreferenced", "0 shares")));
  CHECK(contains(https.command(with(https_args, {"check"})).output, "consistent"));
  client.fetch("kept", root / "out");
  CHECK(read_file(root / "out") == kept);

  // One byte of a record changed in the object store: check finds it and fails.
  auto bucket = bucket_of(https_args);
  std::vector<splitfs::objectstore::ObjectInfo> objects;
  REQUIRE_FALSE(bucket.list("packs/", objects));
  REQUIRE_FALSE(objects.empty());
  const std::string key = objects.back().key;
  splitfs::Bytes data;
  REQUIRE_FALSE(bucket.get_object(key, data));
  REQUIRE(data.size() >
          splitfs::store::pack::kFileHeaderSize + splitfs::store::pack::kRecordHeaderSize + 1);
  data[splitfs::store::pack::kFileHeaderSize + splitfs::store::pack::kRecordHeaderSize] ^= 0x40;
  const splitfs::ByteView whole(data);
  REQUIRE_FALSE(bucket.put_object(key, std::span<const splitfs::ByteView>(&whole, 1)));
  const auto damaged = https.command(with(https_args, {"check"}));
  INFO(damaged.output);
  CHECK(damaged.status == 1);
  CHECK(contains(damaged.output, "fails its checksum"));
  CHECK(contains(damaged.output, key));
  // The other door's store is untouched.
  CHECK(tcp.command(with(tcp_args, {"check"})).status == 0);
}

TEST_CASE("a quota holds across the processes of a door: one count in the index",
          "[scaleout][operator]") {
  TempDir root("splitfs-scaleout-quota");
  const auto https_args = shared_store_args(test_engines());
  const auto tcp_args = shared_store_args(test_engines());
  // Two processes per door on one data folder (one users file) and one store.
  ServerProcess https1("splitfs-https-server", root / "https", https_args);
  ServerProcess https2("splitfs-https-server", root / "https", https_args, Enrol::none);
  ServerProcess tcp1("splitfs-tcp-server", root / "tcp", tcp_args);
  ServerProcess tcp2("splitfs-tcp-server", root / "tcp", tcp_args, Enrol::none);
  // Each door holds about half of every file: a 2 MiB quota takes one 2.4 MB file, not two.
  for (const ServerProcess* door : {&https1, &tcp1})
    REQUIRE(door->command({"users", "add", kTestUser, test_client_fingerprint(), "--quota", "2M"})
                .status == 0);
  const fs::path home1 = init_home(root / "one", https1, tcp1);
  fs::copy(home1, root / "two", fs::copy_options::recursive);
  const fs::path home2 = init_home(root / "two", https2, tcp2, true);
  splitfs::Client one(home1);
  splitfs::Client two(home2);

  const std::string small = random_string(std::size_t{20} * 1024, 1);
  const std::string big1 = random_string(std::size_t{2400} * 1000, 2);
  const std::string big2 = random_string(std::size_t{2400} * 1000, 3);
  write_file(root / "small", small);
  write_file(root / "big1", big1);
  write_file(root / "big2", big2);
  // The second processes count first, then the first processes store most of the quota: a count
  // per process would let the second processes take another 2.4 MB.
  two.store(root / "small", "small");
  one.store(root / "big1", "big1");
  CHECK_THROWS_AS(two.store(root / "big2", "big2"), splitfs::QuotaExceeded);
  CHECK_THROWS_AS(one.store(root / "big2", "big2"), splitfs::QuotaExceeded);
  CHECK(two.list().size() == 2);

  // The count follows removals and compaction, whichever process did them.
  one.remove("big1");
  CHECK_THROWS_AS(two.store(root / "big2", "big2"), splitfs::QuotaExceeded);  // garbage counts
  REQUIRE(https1.command(with(https_args, {"compact", "--grace", "0"})).status == 0);
  REQUIRE(tcp2.command(with(tcp_args, {"compact", "--grace", "0"})).status == 0);
  two.store(root / "big2", "big2");
  one.fetch("big2", root / "out");
  CHECK(read_file(root / "out") == big2);
  // check compares each user's count with what it holds.
  const auto https_check = https2.command(with(https_args, {"check"}));
  INFO(https_check.output);
  CHECK(https_check.status == 0);
  CHECK(tcp1.command(with(tcp_args, {"check"})).status == 0);
}
