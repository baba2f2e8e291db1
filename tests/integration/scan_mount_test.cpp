// The malware check in the mount, as a user meets it: `cp` of each sample into a real mount. A
// blocked file's close() fails with EACCES (cp reports it), nothing of it reaches the servers
// (their own counts say so), the log names detector, rule and the quarantine copy, and the file
// shows its last stored content. Suspicious files are stored with a log line, clean ones silently;
// -o noscan stores anything and says so.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <fstream>
#include <string>

#include "tests/integration/mount_fixture.hpp"
#include "tests/support/files.hpp"
#include "tests/unit/scan_samples.hpp"

namespace fs = std::filesystem;
namespace samples = splitfs::testing::samples;
using splitfs::Bytes;
using splitfs::testing::Mount;
using splitfs::testing::read_bytes;
using splitfs::testing::read_file;
using splitfs::testing::run_program;
using splitfs::testing::write_file;

namespace {

// The files and on-disk bytes each server holds for the test user.
std::vector<std::pair<std::uint64_t, std::uint64_t>> held(const fs::path& home) {
  splitfs::Client client(home);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (const auto& u : client.df())
    out.emplace_back(u.files, u.disk_bytes);
  return out;
}

// An ELF executable's header followed by 4 MiB that do not compress, named like a video: large
// enough that any share of it reaching a server would show in the servers' disk use.
Bytes large_masked_executable() {
  Bytes out = samples::elf_header();
  const Bytes noise = samples::random_bytes(4u << 20, 11);
  out.insert(out.end(), noise.begin(), noise.end());
  return out;
}

// The test's YARA rule and ClamAV signatures, in the mount's configuration.
void configure_engines(Mount& m) {
  samples::write_marker_rule(m.dir.path() / "rules");
  samples::write_clamav_database(m.dir.path() / "clamav");
  std::ofstream(m.home / "config.toml", std::ios::app)
      << "\n[scan]\nyara_rules = [\"" << (m.dir.path() / "rules").string() << "\"]\n"
      << "clamav_database = \"" << (m.dir.path() / "clamav").string() << "\"\n";
  m.remount();
}

fs::path write_input(Mount& m, const std::string& name, const Bytes& data) {
  fs::path path = m.dir.path() / "in" / name;
  fs::create_directories(path.parent_path());
  write_file(path, data);
  return path;
}

}  // namespace

TEST_CASE("mount: cp of a malicious file fails with EACCES and nothing of it is committed",
          "[mount][scan]") {
  Mount m;
  configure_engines(m);
  std::vector<samples::Sample> blocked;
  for (auto& s : samples::heuristic_samples()) {
    if (s.verdict == "malicious")
      blocked.push_back(std::move(s));
  }
  for (auto& s : samples::engine_samples())
    blocked.push_back(std::move(s));
  blocked.push_back({"movie.mp4", large_masked_executable(), "malicious", "masquerade.elf"});

  const auto before = held(m.home);
  for (const auto& sample : blocked) {
    INFO(sample.name);
    const fs::path in = write_input(m, sample.name, sample.data);
    CHECK(run_program({"cp", in.string(), (m / sample.name).string()}) != 0);
    // The name stays, with the last stored content: none.
    CHECK(fs::file_size(m / sample.name) == 0);
    CHECK(read_file(m / sample.name).empty());
  }
  // The same through open/write/close: close() itself says EACCES.
  const int fd = ::open((m / "direct.jpg").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  REQUIRE(fd >= 0);
  const Bytes pe = samples::pe_header();
  REQUIRE(::write(fd, pe.data(), pe.size()) == static_cast<ssize_t>(pe.size()));
  errno = 0;
  CHECK(::close(fd) == -1);
  CHECK(errno == EACCES);

  const auto after = held(m.home);
  INFO("servers before: " << before[0].second << " / " << before[1].second
                          << " bytes, after: " << after[0].second << " / " << after[1].second);
  // Segments upload while they are written, before the verdict at close: encrypted shares no
  // object references (compaction takes them). What must not exist is a committed content
  // object, and nothing beyond the blocked bytes themselves may have been sent.
  std::uint64_t blocked_bytes = pe.size();
  for (const auto& sample : blocked)
    blocked_bytes += sample.data.size();
  for (std::size_t j = 0; j < 2; ++j) {
    CHECK(after[j].first == before[j].first);  // no content object: only the tree changed
    CHECK(after[j].second < before[j].second + blocked_bytes + (1u << 20));
  }

  const std::string log = read_file(m.home / "mount.log");
  INFO(log);
  for (const auto& sample : blocked) {
    const auto at = log.find("malware check blocked /" + sample.name + ": ");
    REQUIRE(at != std::string::npos);
    const std::string line = log.substr(at, log.find('\n', at) - at);
    CHECK_THAT(line, Catch::Contains("rule " + sample.rule));
    CHECK_THAT(line, Catch::Contains("detector "));
    const auto kept = line.find("quarantine at ");
    REQUIRE(kept != std::string::npos);
    CHECK(samples::file_holds(line.substr(kept + 14), sample.data));
  }
  CHECK(log.find("malware check blocked /direct.jpg") != std::string::npos);

  // A clean file of the same size goes through, and the servers' counts do move.
  const fs::path clean = write_input(m, "clip.mp4", samples::random_bytes(4u << 20, 12));
  CHECK(run_program({"cp", clean.string(), (m / "clip.mp4").string()}) == 0);
  CHECK(held(m.home)[0].first == before[0].first + 1);
  CHECK(held(m.home)[0].second > before[0].second + (1u << 20));
  m.unmount();
}

// With only the bundled rules, a large file is checked in parts: while cp writes it, then the
// rest at close on two threads: a rule whose two strings lie at either end still fires
// (suspicious: stored with a log line), and one near the end still blocks.
TEST_CASE("mount: a large file is checked in parts and a rule still sees both", "[mount][scan]") {
  Mount m;
  Bytes data = samples::random_bytes(80u << 20, 13);  // past the 64 MiB at which the scan splits
  const auto put = [&](std::size_t at, std::string_view text) {
    std::copy(text.begin(), text.end(), data.begin() + static_cast<std::ptrdiff_t>(at));
  };
  // Built at run time: this test's own binary is a clean sample elsewhere.
  put(100, std::string("<?") + "php");
  put(data.size() - 100, std::string(" eval(base64_") + "decode($_POST['x'])); ");
  CHECK(run_program(
            {"cp", write_input(m, "notes.txt", data).string(), (m / "notes.txt").string()}) == 0);
  put(data.size() - 1000, std::string(" sekurlsa") + "::" + "logonpasswords ");
  CHECK(run_program({"cp", write_input(m, "tool.bin", data).string(), (m / "tool.bin").string()}) !=
        0);
  CHECK(fs::file_size(m / "tool.bin") == 0);
  const std::string log = read_file(m.home / "mount.log");
  INFO(log);
  CHECK_THAT(log, Catch::Contains("malware check: /notes.txt: suspicious") &&
                      Catch::Contains("rule splitfs:php_webshell_eval"));
  CHECK_THAT(log, Catch::Contains("malware check blocked /tool.bin: ") &&
                      Catch::Contains("rule splitfs:credential_dumper_mimikatz"));
  m.unmount();
}

TEST_CASE("mount: with ClamAV, which reads files through, a large file's bytes stay local for it",
          "[mount][scan]") {
  Mount m("allow_other,cache_size=32M");  // what is uploaded leaves the memory cache soon
  // The bundled rules only, which YARA can check a part at a time (the test's own rule cannot).
  samples::write_clamav_database(m.dir.path() / "clamav");
  std::ofstream(m.home / "config.toml", std::ios::app)
      << "\n[scan]\nclamav_database = \"" << (m.dir.path() / "clamav").string() << "\"\n";
  m.remount();
  const Bytes data = samples::random_bytes(96u << 20, 19);  // within clamav_max_bytes
  const auto before = m.stats();
  const int fd = ::open((m / "big.bin").c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  for (int i = 0; i < 200 && m.stats()["bytes_checked_ahead"] < (64u << 20); ++i)
    ::usleep(50'000);
  REQUIRE(m.stats()["bytes_checked_ahead"] >= (64u << 20));  // YARA checked most of it ahead
  REQUIRE(::close(fd) == 0);
  // ClamAV at close read every byte from the write-back file, none from the servers.
  CHECK(m.stats()["bytes_received"] == before.at("bytes_received"));
  m.unmount();
}

// The check ahead of a writer holds only while the file grows at its end: a write behind it, or a
// truncation, and the close checks those bytes again.
TEST_CASE("mount: a change behind the check ahead is checked again at close", "[mount][scan]") {
  Mount m;
  const Bytes clean = samples::random_bytes(80u << 20, 17);
  // Writes data to name in 1 MiB pieces, then waits until the check ahead has taken 64 MiB more.
  const auto write_ahead = [&](const std::string& name, const Bytes& data) {
    const std::uint64_t before = m.stats()["bytes_checked_ahead"];
    const int fd = ::open((m / name).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    for (std::size_t at = 0; at < data.size(); at += 1u << 20) {
      const std::size_t n = std::min<std::size_t>(1u << 20, data.size() - at);
      REQUIRE(::pwrite(fd, data.data() + at, n, static_cast<off_t>(at)) == static_cast<ssize_t>(n));
    }
    for (int i = 0; i < 200 && m.stats()["bytes_checked_ahead"] < before + (64u << 20); ++i)
      ::usleep(50'000);
    REQUIRE(m.stats()["bytes_checked_ahead"] >= before + (64u << 20));
    return fd;
  };
  const std::string mimikatz = std::string(" sekurlsa") + "::" + "logonpasswords ";
  {
    // Into bytes already checked, clean: the close must find it.
    const int fd = write_ahead("behind.bin", clean);
    REQUIRE(::pwrite(fd, mimikatz.data(), mimikatz.size(), 1000) ==
            static_cast<ssize_t>(mimikatz.size()));
    errno = 0;
    CHECK(::close(fd) != 0);
    CHECK(errno == EACCES);
  }
  {
    // Cut below the checked parts, then written again at its end with the string where clean
    // bytes were checked before: the close must find it.
    const int fd = write_ahead("regrown.bin", clean);
    REQUIRE(::ftruncate(fd, 5u << 20) == 0);
    Bytes again(clean.begin() + (5 << 20), clean.end());
    std::copy(mimikatz.begin(), mimikatz.end(), again.begin() + (5 << 20));
    for (std::size_t at = 0; at < again.size(); at += 1u << 20) {
      const std::size_t n = std::min<std::size_t>(1u << 20, again.size() - at);
      REQUIRE(::pwrite(fd, again.data() + at, n, static_cast<off_t>((5u << 20) + at)) ==
              static_cast<ssize_t>(n));
    }
    errno = 0;
    CHECK(::close(fd) != 0);
    CHECK(errno == EACCES);
  }
  const std::string log = read_file(m.home / "mount.log");
  INFO(log);
  CHECK_THAT(log, Catch::Contains("malware check blocked /behind.bin: ") &&
                      Catch::Contains("rule splitfs:credential_dumper_mimikatz"));
  CHECK_THAT(log, Catch::Contains("malware check blocked /regrown.bin: "));
  m.unmount();
}

TEST_CASE("mount: suspicious files are stored with a log line, clean files silently",
          "[mount][scan]") {
  Mount m;
  const fs::path docm = write_input(m, "invoice.docm", samples::docm());
  CHECK(run_program({"cp", docm.string(), (m / "invoice.docm").string()}) == 0);
  for (const auto& sample : samples::heuristic_samples()) {
    if (sample.verdict != "clean")
      continue;
    INFO(sample.name);
    const fs::path in = write_input(m, sample.name, sample.data);
    CHECK(run_program({"cp", in.string(), (m / sample.name).string()}) == 0);
  }
  m.remount();
  CHECK(read_bytes(m / "invoice.docm") == samples::docm());
  for (const auto& sample : samples::heuristic_samples()) {
    if (sample.verdict == "clean")
      CHECK(samples::file_holds(m / sample.name, sample.data));
  }
  const std::string log = read_file(m.home / "mount.log");
  INFO(log);
  CHECK_THAT(log, Catch::Contains("malware check: /invoice.docm: suspicious") &&
                      Catch::Contains("office.vba-macros") && Catch::Contains("stored anyway"));
  std::size_t lines = 0;
  for (std::size_t at = log.find("malware check"); at != std::string::npos;
       at = log.find("malware check", at + 1)) {
    ++lines;
  }
  CHECK(lines == 1);
  CHECK(!fs::exists(m.home / "quarantine"));
}

TEST_CASE("mount: -o noscan stores anything and says so, and splitfs fetch checks it again",
          "[mount][scan]") {
  Mount m("allow_other,noscan");
  const fs::path eicar = write_input(m, "eicar.com", samples::eicar());
  CHECK(run_program({"cp", eicar.string(), (m / "eicar.com").string()}) == 0);
  CHECK(read_bytes(m / "eicar.com") == samples::eicar());
  CHECK_THAT(read_file(m.home / "mount.log"),
             Catch::Contains("-o noscan") && Catch::Contains("WITHOUT a malware check"));
  m.unmount();
  // The command line fetches files the mount wrote by their path, through the same check.
  const std::string splitfs = splitfs::testing::bin_dir() + "/splitfs";
  const fs::path out = m.dir.path() / "out";
  fs::create_directories(out);
  CHECK(run_program(
            {splitfs, "--home", m.home.string(), "fetch", "/eicar.com", "-o", out.string()}) == 10);
  CHECK(fs::is_empty(out));
  CHECK(run_program({splitfs, "--home", m.home.string(), "fetch", "--no-scan", "/eicar.com", "-o",
                     out.string()}) == 0);
  CHECK(read_bytes(out / "eicar.com") == samples::eicar());
}
