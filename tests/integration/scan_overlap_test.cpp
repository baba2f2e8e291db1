// The malware check of large files runs beside the transfer: a large store's shares may reach the
// servers before the verdict, but a blocked file is never committed, listed or fetchable; a large
// fetch is scanned while it downloads and a blocked one leaves no file behind.
#include <catch2/catch.hpp>
#include <fstream>
#include <splitfs/client.hpp>

#include "tests/support/files.hpp"
#include "tests/support/servers.hpp"
#include "tests/unit/scan_samples.hpp"

namespace fs = std::filesystem;
namespace samples = splitfs::testing::samples;
using splitfs::Bytes;
using splitfs::testing::read_bytes;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;
using splitfs::testing::write_file;

namespace {

struct Fixture {
  TestServers servers;
  TempDir work{"splitfs-scan-overlap"};
  fs::path home = work / "client";

  Fixture() {
    splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp));
    samples::write_marker_rule(work / "rules");
    std::ofstream(home / "config.toml", std::ios::app)
        << "\n[scan]\nyara_rules = [\"" << (work / "rules").string() << "\"]\n";
  }

  fs::path write(const std::string& name, const Bytes& data) {
    fs::path path = work / "in" / name;
    fs::create_directories(path.parent_path());
    write_file(path, data);
    return path;
  }

  std::uint64_t files_held() {
    splitfs::Client client(home);
    std::uint64_t files = 0;
    for (const auto& u : client.df())
      files += u.files;
    return files;
  }
};

// 40 MiB of random bytes (several transfer batches) with the test marker near the end, where the
// scan finds it last.
Bytes large_marked() {
  Bytes data = samples::random_bytes(40u << 20, 11);
  const std::string marker = samples::yara_marker();
  std::copy(marker.begin(), marker.end(), data.end() - 4096);
  return data;
}

}  // namespace

TEST_CASE("a blocked large store is never committed, listed or fetchable") {
  Fixture f;
  splitfs::Client client(f.home);
  const Bytes data = large_marked();
  CHECK_THROWS_AS(client.store(f.write("big.bin", data), "big.bin"), splitfs::MaliciousFileError);
  CHECK(client.list().empty());
  CHECK(f.files_held() == 0);
  fs::create_directories(f.work / "out");
  CHECK_THROWS_AS(client.fetch("big.bin", f.work / "out"), splitfs::NotFound);
  CHECK(fs::is_empty(f.work / "out"));

  // The same bytes without the marker are stored and come back whole.
  Bytes clean = data;
  std::fill(clean.end() - 4096, clean.end() - 4096 + 32, std::uint8_t{0});
  client.store(f.write("clean.bin", clean), "clean.bin");
  REQUIRE(client.list().size() == 1);
  client.fetch("clean.bin", f.work / "out");
  CHECK(read_bytes(f.work / "out" / "clean.bin") == clean);
}

TEST_CASE("a large fetch is checked while it downloads and a blocked one leaves nothing") {
  Fixture f;
  splitfs::Client unchecked(f.home);
  unchecked.set_scanning(false);
  unchecked.store(f.write("big.bin", large_marked()), "big.bin");
  REQUIRE(unchecked.list().size() == 1);

  splitfs::Client client(f.home);
  const fs::path out = f.work / "out";
  fs::create_directories(out);
  try {
    client.fetch("big.bin", out);
    FAIL("fetched");
  } catch (const splitfs::MaliciousFileError& e) {
    CHECK(e.rule() == "marker:test_marker");
  }
  CHECK(fs::is_empty(out));  // no file under the name, no temporary beside it
  CHECK_THROWS_AS(client.fetch("big.bin", out / "renamed.bin"), splitfs::MaliciousFileError);
  CHECK(fs::is_empty(out));
}
