// Samples for the malicious-file tests, all built at test time: the EICAR test file is assembled
// from pieces (the repository never holds it whole), archives are written with libarchive,
// executables are headers only. Shared by the unit, integration and mount tests.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/bytes.hpp"
#include "tests/support/files.hpp"
#include "tests/support/random_bytes.hpp"

namespace splitfs::testing::samples {

inline Bytes bytes_of(std::string_view text) {
  return Bytes(text.begin(), text.end());
}

// The 68-byte EICAR anti-virus test string.
inline Bytes eicar() {
  const std::string parts[] = {"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS",
                               "-TEST-FILE!$H+H*"};
  return bytes_of(parts[0] + parts[1] + parts[2]);
}

struct Member {
  std::string name;
  Bytes data;
};

enum class Format { zip, tar_gz, gz };

// An archive in memory. gz: a single gzip stream of the first member.
inline Bytes archive_of(const std::vector<Member>& members, Format format = Format::zip) {
  Bytes out;
  archive* a = archive_write_new();
  if (format == Format::zip) {
    archive_write_set_format_zip(a);
  } else if (format == Format::tar_gz) {
    archive_write_set_format_pax_restricted(a);
    archive_write_add_filter_gzip(a);
  } else {
    archive_write_set_format_raw(a);
    archive_write_add_filter_gzip(a);
  }
  archive_write_set_bytes_in_last_block(a, 1);
  archive_write_set_options(a, "gzip:!timestamp");  // the same sample every time
  const auto write = [](archive*, void* context, const void* buffer, size_t n) -> la_ssize_t {
    auto* sink = static_cast<Bytes*>(context);
    const auto* p = static_cast<const std::uint8_t*>(buffer);
    sink->insert(sink->end(), p, p + n);
    return static_cast<la_ssize_t>(n);
  };
  if (archive_write_open2(a, &out, nullptr, write, nullptr, nullptr) != ARCHIVE_OK)
    throw std::runtime_error(archive_error_string(a));
  for (const Member& m : members) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, m.name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, 1700000000, 0);
    archive_entry_set_size(e, static_cast<la_int64_t>(m.data.size()));
    if (archive_write_header(a, e) != ARCHIVE_OK)
      throw std::runtime_error(archive_error_string(a));
    for (std::size_t done = 0; done < m.data.size();) {
      const std::size_t n = std::min<std::size_t>(1u << 20, m.data.size() - done);
      if (archive_write_data(a, m.data.data() + done, n) < 0)
        throw std::runtime_error(archive_error_string(a));
      done += n;
    }
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

inline Bytes zip(const std::vector<Member>& members) {
  return archive_of(members, Format::zip);
}

// Archives nested `levels` deep (a zip in a zip in ...), the innermost holding `data`.
inline Bytes nested_zips(int levels, const Member& innermost) {
  Bytes data = zip({innermost});
  for (int level = 2; level <= levels; ++level)
    data = zip({{"level" + std::to_string(level - 1) + ".zip", std::move(data)}});
  return data;
}

// An ELF executable's header (x86-64), padded.
inline Bytes elf_header() {
  Bytes out(512, 0);
  const std::uint8_t ident[] = {0x7F, 'E', 'L', 'F', 2, 1, 1, 0};
  std::memcpy(out.data(), ident, sizeof ident);
  out[16] = 2;     // ET_EXEC
  out[18] = 0x3E;  // x86-64
  out[20] = 1;
  return out;
}

// A Windows PE executable's headers, padded.
inline Bytes pe_header() {
  Bytes out(1024, 0);
  out[0] = 'M';
  out[1] = 'Z';
  out[0x3C] = 0x80;  // e_lfanew
  std::memcpy(out.data() + 0x80, "PE\0\0", 4);
  out[0x84] = 0x64;  // machine: x86-64
  out[0x85] = 0x86;
  return out;
}

// A Word document with a VBA project, the way Word writes a .docm.
inline Bytes docm() {
  const std::string types =
      "<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/"
      "content-types\"><Default Extension=\"bin\" "
      "ContentType=\"application/vnd.ms-office.vbaProject\"/></Types>";
  const std::string document =
      "<?xml version=\"1.0\"?><w:document xmlns:w=\"http://schemas.openxmlformats.org/"
      "wordprocessingml/2006/main\"><w:body><w:p><w:r><w:t>Quarterly figures</w:t></w:r></w:p>"
      "</w:body></w:document>";
  Bytes project = {0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1};
  project.resize(1536, 0);
  return zip({{"[Content_Types].xml", bytes_of(types)},
              {"word/document.xml", bytes_of(document)},
              {"word/vbaProject.bin", std::move(project)}});
}

// A legacy (OLE2) Word file whose directory names a VBA project.
inline Bytes ole_doc_with_macros() {
  Bytes out = {0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1};
  out.resize(70000, 0);
  const char name[] = "_VBA_PROJECT";
  for (std::size_t i = 0; i < sizeof name - 1; ++i)
    out[65530 + 2 * i] = static_cast<std::uint8_t>(name[i]);  // straddles a 64 KiB boundary
  return out;
}

using splitfs::testing::random_bytes;

inline Bytes text(std::size_t n) {
  std::string out;
  for (int line = 0; out.size() < n; ++line)
    out += "Line " + std::to_string(line) + ": the minutes of the meeting, nothing to see.\n";
  out.resize(n);
  return bytes_of(out);
}

inline Bytes pdf_like() {
  std::string out =
      "%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n";
  out += "2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n";
  out += "3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\nendobj\n";
  out += "trailer\n<< /Root 1 0 R >>\n%%EOF\n";
  return bytes_of(out);
}

// A real executable of this machine.
inline Bytes real_elf() {
  return read_bytes("/proc/self/exe");
}

// 32 MiB of zeros: about a thousand times what it compresses to.
inline Bytes zeros(std::size_t n = 32u << 20) {
  return Bytes(n, 0);
}

// Whether the file holds exactly `expected`. For samples of megabytes: a failed CHECK(a == b) on
// the bytes themselves has Catch print every byte, which takes minutes.
inline bool file_holds(const std::filesystem::path& path, const Bytes& expected) {
  return read_bytes(path) == expected;
}

// Every sample: its file name, its bytes and the verdict and rule the built-in heuristics give.
struct Sample {
  std::string name;
  Bytes data;
  std::string verdict;  // "clean", "suspicious" or "malicious"
  std::string rule;     // the worst finding's rule ("" when clean)
};

inline std::vector<Sample> heuristic_samples() {
  const Bytes e = eicar();
  return {
      {"eicar.com", e, "malicious", "eicar"},
      {"eicar.zip", zip({{"eicar.com", e}}), "malicious", "eicar"},
      {"eicar-zip-in-zip.zip", zip({{"inner.zip", zip({{"eicar.com", e}})}}), "malicious", "eicar"},
      {"eicar.tar.gz",
       archive_of({{"docs/readme.txt", text(2000)}, {"docs/eicar.com", e}}, Format::tar_gz),
       "malicious", "eicar"},
      {"report.pdf", elf_header(), "malicious", "masquerade.elf"},
      {"holiday.jpg", pe_header(), "malicious", "masquerade.pe"},
      {"bomb.zip", zip({{"zeros.bin", zeros()}}), "malicious", "archive.ratio"},
      {"bomb.gz", archive_of({{"zeros.bin", zeros()}}, Format::gz), "malicious", "archive.ratio"},
      {"deep.zip", nested_zips(10, {"note.txt", text(100)}), "malicious", "archive.depth"},
      {"invoice.docm", docm(), "suspicious", "office.vba-macros"},
      {"budget.doc", ole_doc_with_macros(), "suspicious", "office.ole-macros"},
      // Clean files of every kind pass without a warning.
      {"notes.txt", text(100000), "clean", ""},
      {"paper.pdf", pdf_like(), "clean", ""},
      {"texts.zip", zip({{"a.txt", text(5000)}, {"b/c.txt", text(300000)}}), "clean", ""},
      {"texts.tar.gz", archive_of({{"a.txt", text(5000)}}, Format::tar_gz), "clean", ""},
      {"noise.bin", random_bytes(3u << 20), "clean", ""},
      {"tool.bin", real_elf(), "clean", ""},
      {"shallow.zip", nested_zips(3, {"note.txt", text(100)}), "clean", ""},
      {"script.txt", bytes_of("#!/bin/sh\necho hello\n"), "clean", ""},
      {"empty.pdf", {}, "clean", ""},
  };
}

// ---- For the YARA and ClamAV detectors: rules and signatures the tests write themselves ----

// What the test's YARA rule looks for (built from pieces: this file must not match it).
inline std::string yara_marker() {
  return std::string("SPLITFS") + "-TEST-" + "MARKER-7f3a";
}

// Writes dir/marker.yar: rule test_marker, matching yara_marker(), of the given severity.
inline void write_marker_rule(const std::filesystem::path& dir,
                              const std::string& severity = "malicious",
                              const std::string& file = "marker.yar") {
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / file);
  out << "rule test_marker {\n  meta:\n    severity = \"" << severity
      << "\"\n    description = \"the test marker\"\n"
      << "  strings:\n    $m = \"" << yara_marker() << "\"\n  condition:\n    $m\n}\n";
}

// What the test's ClamAV pattern signature looks for.
inline std::string clamav_pattern() {
  return std::string("splitfs") + "-clamav-" + "pattern-c0ffee";
}

// The file the test's ClamAV hash signature names.
inline Bytes clamav_hashed() {
  return random_bytes(70000, 99);
}

inline Bytes clamav_pattern_carrier() {
  Bytes carrier = random_bytes(200000, 5);
  const std::string p = clamav_pattern();
  std::copy(p.begin(), p.end(), carrier.begin() + 123456);
  return carrier;
}

// Writes a ClamAV database folder: one MD5 signature (.hdb) and one pattern (.ndb).
inline void write_clamav_database(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const Bytes hashed = clamav_hashed();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(hashed.data(), hashed.size(), digest, &length, EVP_md5(), nullptr);
  std::ofstream(dir / "splitfs-test.hdb")
      << to_hex(ByteView(digest, length)) << ":" << hashed.size() << ":Splitfs.Test.Hash\n";
  std::ofstream(dir / "splitfs-test.ndb")
      << "Splitfs.Test.Pattern:0:*:" << to_hex(bytes_of(clamav_pattern())) << "\n";
}

// Samples the YARA rule and the ClamAV signatures above catch (rule: a prefix of the rule the
// verdict names).
inline std::vector<Sample> engine_samples() {
  return {
      {"marked.txt", bytes_of("minutes\n" + yara_marker() + "\nend\n"), "malicious",
       "marker:test_marker"},
      {"data.bin", clamav_hashed(), "malicious", "Splitfs.Test.Hash"},
      {"blob.bin", clamav_pattern_carrier(), "malicious", "Splitfs.Test.Pattern"},
      {"blob.zip", zip({{"readme.txt", text(3000)}, {"x/blob.bin", clamav_pattern_carrier()}}),
       "malicious", "Splitfs.Test.Pattern"},
  };
}

}  // namespace splitfs::testing::samples
