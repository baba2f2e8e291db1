// ClamAV in-process, with signatures the test writes itself (the official databases cannot be
// downloaded here): a sample matched by hash (.hdb) and one by pattern (.ndb), also inside a zip;
// clean files pass; without a usable database ClamAV is "unavailable" and the scan goes on.
#include <catch2/catch.hpp>

#include "scan/scan.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/scan_samples.hpp"

using namespace splitfs;
using namespace splitfs::scan;
namespace samples = splitfs::testing::samples;
using splitfs::testing::TempDir;

namespace {

// A database folder with one hash and one pattern signature.
struct Signatures {
  TempDir folder{"splitfs-clamav"};
  Signatures() { samples::write_clamav_database(folder.path()); }
};

Settings clamav_only(const std::filesystem::path& database) {
  Settings s;
  s.heuristics = false;
  s.bundled_yara_rules = false;
  s.clamav_database = database;
  return s;
}

Verdict scan_bytes(Scanner& scanner, const Bytes& data, std::string_view name) {
  MemorySource source(data);
  return scanner.scan(source, name);
}

}  // namespace

TEST_CASE("ClamAV matches the test's own signatures by hash and by pattern") {
  Signatures db;
  Scanner scanner(clamav_only(db.folder.path()));
  REQUIRE(scanner.status().at(0).unavailable.empty());

  const Verdict by_hash = scan_bytes(scanner, samples::clamav_hashed(), "data.bin");
  REQUIRE(by_hash.worst());
  CHECK(by_hash.severity == Severity::malicious);
  CHECK(by_hash.worst()->detector == "clamav");
  CHECK_THAT(by_hash.worst()->rule, Catch::StartsWith("Splitfs.Test.Hash"));

  Bytes changed = samples::clamav_hashed();
  changed[100] ^= 1;
  CHECK(scan_bytes(scanner, changed, "data.bin").findings.empty());

  const Bytes carrier = samples::clamav_pattern_carrier();
  const Verdict by_pattern = scan_bytes(scanner, carrier, "data.bin");
  REQUIRE(by_pattern.worst());
  CHECK_THAT(by_pattern.worst()->rule, Catch::StartsWith("Splitfs.Test.Pattern"));

  // ClamAV opens archives itself.
  const Verdict zipped = scan_bytes(
      scanner, samples::zip({{"readme.txt", samples::text(3000)}, {"x/data.bin", carrier}}),
      "bundle.zip");
  REQUIRE(zipped.worst());
  CHECK_THAT(zipped.worst()->rule, Catch::StartsWith("Splitfs.Test.Pattern"));
}

TEST_CASE("clean files pass ClamAV") {
  Signatures db;
  Settings settings;  // every detector
  settings.clamav_database = db.folder.path();
  Scanner scanner(settings);
  for (const auto& sample : samples::heuristic_samples()) {
    if (sample.verdict != "clean")
      continue;
    INFO(sample.name);
    const Verdict v = scan_bytes(scanner, sample.data, sample.name);
    CHECK(v.findings.empty());
    CHECK(v.notes.empty());
  }
}

TEST_CASE("without a usable database ClamAV is unavailable and the scan goes on") {
  TempDir empty("splitfs-clamav");
  Settings settings = clamav_only(empty.path());
  settings.heuristics = true;
  Scanner scanner(settings);
  const Verdict v = scan_bytes(scanner, samples::eicar(), "eicar.com");
  CHECK(v.worst()->rule == "eicar");
  REQUIRE(v.notes.size() == 1);
  CHECK_THAT(v.notes[0], Catch::Contains("clamav unavailable") && Catch::Contains("freshclam"));

  TempDir broken("splitfs-clamav");
  std::ofstream(broken / "bad.ndb") << "this is not a signature\n";
  Scanner refused(clamav_only(broken.path()));
  const auto status = refused.status();
  REQUIRE(status.size() == 1);
  CHECK_THAT(status[0].unavailable, Catch::Contains("cannot load"));
  CHECK(scan_bytes(refused, samples::text(100), "a.txt").findings.empty());
}

TEST_CASE("a check ahead is read again at the end only while ClamAV is ready") {
  Signatures db;
  Settings settings;  // every detector
  settings.clamav_database = db.folder.path();
  Scanner with_clamav(settings);
  CHECK(with_clamav.scans_ahead());
  CHECK(with_clamav.rereads_ahead(settings.clamav_max_bytes));  // ClamAV reads files through
  CHECK_FALSE(with_clamav.rereads_ahead(settings.clamav_max_bytes + 1));  // but not larger ones

  TempDir empty("splitfs-clamav");
  settings.clamav_database = empty.path();
  Scanner without(settings);  // ClamAV unavailable: YARA takes parts, the heuristics read heads
  CHECK(without.scans_ahead());
  CHECK_FALSE(without.rereads_ahead(1u << 20));
}
