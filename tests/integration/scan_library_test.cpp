// Malicious file checks through the library against real servers: a blocked store sends nothing to
// either server (their own counts say so) and keeps the bytes in quarantine; a blocked fetch
// leaves nothing under the destination's name; suspicious files go through with a warning, clean
// ones without; the policy comes from the configuration; the C API has a code of its own.
#include <splitfs/splitfs.h>
#include <catch2/catch.hpp>
#include <cstdlib>
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

// A client home pinned to both test servers, with the test's YARA rule and ClamAV signatures.
struct Fixture {
  TestServers servers;
  TempDir work{"splitfs-scan"};
  fs::path home = work / "client";
  fs::path quarantine = home / "quarantine";

  explicit Fixture(const std::string& policy = "") {
    splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp));
    samples::write_marker_rule(work / "rules");
    samples::write_clamav_database(work / "clamav");
    std::ofstream(home / "config.toml", std::ios::app)
        << "\n[scan]\nyara_rules = [\"" << (work / "rules").string() << "\"]\n"
        << "clamav_database = \"" << (work / "clamav").string() << "\"\n"
        << policy;
  }

  fs::path write(const std::string& name, const Bytes& data) {
    fs::path path = work / "in" / name;
    fs::create_directories(path.parent_path());
    write_file(path, data);
    return path;
  }

  // What the servers hold for this user, as each counts it: files and distinct bytes.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> held() {
    splitfs::Client client(home);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (const auto& u : client.df())
      out.emplace_back(u.files, u.unique_logical_bytes);
    return out;
  }
};

std::vector<samples::Sample> malicious_samples() {
  std::vector<samples::Sample> out;
  for (auto& s : samples::heuristic_samples()) {
    if (s.verdict == "malicious")
      out.push_back(std::move(s));
  }
  for (auto& s : samples::engine_samples())
    out.push_back(std::move(s));
  return out;
}

}  // namespace

TEST_CASE("a blocked store sends nothing to any server and keeps the bytes in quarantine") {
  Fixture f;
  const auto before = f.held();
  splitfs::Client client(f.home);
  for (const auto& sample : malicious_samples()) {
    INFO(sample.name);
    const fs::path path = f.write(sample.name, sample.data);
    try {
      client.store(path, sample.name);
      FAIL("stored");
    } catch (const splitfs::MaliciousFileError& e) {
      CHECK_THAT(e.rule(), Catch::StartsWith(sample.rule));
      CHECK(!e.detector().empty());
      CHECK_THAT(e.what(), Catch::Contains(e.quarantine_path()));
      REQUIRE(!e.quarantine_path().empty());
      CHECK(fs::path(e.quarantine_path()).parent_path() == f.quarantine);
      CHECK(samples::file_holds(e.quarantine_path(), sample.data));
      CHECK((fs::status(e.quarantine_path()).permissions() & fs::perms::all) ==
            fs::perms::owner_read);
    }
  }
  CHECK(client.list().empty());
  CHECK(f.held() == before);
  // One record per blocked file, with its bytes' hash.
  std::size_t records = 0;
  for (const auto& entry : fs::directory_iterator(f.quarantine))
    records += entry.path().extension() == ".json";
  CHECK(records == malicious_samples().size());
}

TEST_CASE("suspicious files are stored and fetched with a warning") {
  Fixture f;
  splitfs::Client client(f.home);
  std::vector<splitfs::ScanWarning> warnings;
  client.on_scan_warning([&](const splitfs::ScanWarning& w) { warnings.push_back(w); });
  const Bytes docm = samples::docm();
  client.store(f.write("invoice.docm", docm), "invoice.docm");
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].severity == "suspicious");
  CHECK_THAT(warnings[0].summary, Catch::Contains("office.vba-macros"));
  REQUIRE(warnings[0].findings.size() == 1);
  CHECK(warnings[0].findings[0].detector == "heuristics");
  CHECK(client.list().size() == 1);
  fs::create_directories(f.work / "out");
  client.fetch("invoice.docm", f.work / "out");
  CHECK(read_bytes(f.work / "out" / "invoice.docm") == docm);
  CHECK(warnings.size() == 2);
  CHECK(!fs::exists(f.quarantine));
}

TEST_CASE("clean files of every kind are stored and fetched without a warning") {
  Fixture f;
  splitfs::Client client(f.home);
  client.on_scan_warning([](const splitfs::ScanWarning& w) { FAIL("warned: " << w.summary); });
  fs::create_directories(f.work / "out");
  for (const auto& sample : samples::heuristic_samples()) {
    if (sample.verdict != "clean")
      continue;
    INFO(sample.name);
    client.store(f.write(sample.name, sample.data), sample.name);
    client.fetch(sample.name, f.work / "out");
    CHECK(samples::file_holds(f.work / "out" / sample.name, sample.data));
  }
  CHECK(!fs::exists(f.quarantine));
}

TEST_CASE("a fetch checks the rebuilt file before it appears under its name") {
  Fixture f;
  // Stored while the check was off, as an older client or last year's rules would have let it.
  splitfs::Client unchecked(f.home);
  unchecked.set_scanning(false);
  const Bytes zipped = samples::zip({{"docs/eicar.com", samples::eicar()}});
  unchecked.store(f.write("bundle.zip", zipped), "bundle.zip");
  REQUIRE(unchecked.list().size() == 1);

  splitfs::Client client(f.home);
  const fs::path out = f.work / "out";
  fs::create_directories(out);
  try {
    client.fetch("bundle.zip", out);
    FAIL("fetched");
  } catch (const splitfs::MaliciousFileError& e) {
    CHECK(e.detector() == "heuristics");
    CHECK(e.rule() == "eicar");
    CHECK(read_bytes(e.quarantine_path()) == zipped);
  }
  CHECK(fs::is_empty(out));  // no file under the name, no temporary left beside it
  CHECK_THROWS_AS(client.fetch("bundle.zip", out / "renamed.zip"), splitfs::MaliciousFileError);
  CHECK(fs::is_empty(out));
}

TEST_CASE("the policy comes from the configuration") {
  Fixture f("suspicious = \"block\"\nmalicious = \"warn\"\n");
  splitfs::Client client(f.home);
  std::vector<std::string> warned;
  client.on_scan_warning([&](const splitfs::ScanWarning& w) { warned.push_back(w.summary); });
  CHECK_THROWS_AS(client.store(f.write("a.docm", samples::docm()), "a.docm"),
                  splitfs::MaliciousFileError);
  client.store(f.write("eicar.com", samples::eicar()), "eicar.com");
  REQUIRE(warned.size() == 1);
  CHECK_THAT(warned[0], Catch::StartsWith("malicious: heuristics eicar"));
  CHECK(client.list().size() == 1);
}

TEST_CASE("a configuration with an unknown policy or a broken rule is refused") {
  Fixture bad_policy("malicious = \"ignore\"\n");
  CHECK_THROWS_AS(splitfs::Client(bad_policy.home), splitfs::ConfigError);
  Fixture broken;
  std::ofstream(broken.work / "rules" / "broken.yar") << "rule broken { condition: $nothing }\n";
  splitfs::Client client(broken.home);
  CHECK_THROWS_AS(client.store(broken.write("a.txt", samples::text(10)), "a.txt"),
                  splitfs::ConfigError);
  CHECK(broken.held()[0].first == 0);
}

TEST_CASE("the C API answers SPLITFS_MALICIOUS") {
  Fixture f;
  const fs::path path = f.write("eicar.com", samples::eicar());
  ::setenv("SPLITFS_HOME", f.home.c_str(), 1);
  const splitfs_status status = split_store(path.c_str());
  const std::string message = splitfs_last_error();
  ::unsetenv("SPLITFS_HOME");
  CHECK(status == SPLITFS_MALICIOUS);
  CHECK_THAT(message, Catch::Contains("eicar") && Catch::Contains("quarantine"));
  CHECK(f.held()[0].first == 0);
}
