// Inside the scan library: the built-in detectors, the content checks the heuristics run on a
// file's bytes in order, and the archive walk (libarchive, nothing written to disk).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "scan/scan.hpp"

struct YR_RULE;

namespace splitfs::scan::detail {

// What YARA found in one part of a file scanned in parts: the rules that matched in it, and for
// each rule that did not, where its strings matched (one place per string, offsets in the part).
struct PartFound {
  std::uint64_t start = 0;  // of the part in the file
  std::vector<const YR_RULE*> matched;
  std::map<const YR_RULE*, std::vector<std::pair<std::uint64_t, std::uint32_t>>> strings;
  std::vector<std::string> notes;
  std::uint64_t skipped = 0;  // bytes YARA's prefilter skipped
};

// The parts of a file a detector checked ahead (ScanAhead's content).
struct AheadParts {
  const Detector* by = nullptr;
  std::uint64_t from = 0;
  std::uint64_t covered = 0;
  std::vector<PartFound> parts;
};

inline constexpr std::string_view kHeuristics = "heuristics";

std::unique_ptr<Detector> make_heuristics();
// Compiles the bundled rules and every rule file of the settings' folders. Throws ConfigError.
std::unique_ptr<Detector> make_yara(const Settings& settings);
std::unique_ptr<Detector> make_clamav(const Settings& settings);

// The bundled YARA rules (scan/rules/*.yar, compiled into the library).
struct BundledRule {
  const char* file;
  const char* text;
};
std::span<const BundledRule> bundled_rules();

// What kind of name a file has, by its extension: documents and media that never hold
// executable code, the plain-text ones among them, or anything else.
enum class NameKind { other, document, text_document };
NameKind name_kind(std::string_view name);

// The heuristics that look at a file's bytes, fed in order: the EICAR test file, executables
// and scripts behind a document or media name (by magic bytes), macros in legacy (OLE2) Office
// files. Keeps at most the first kHeadBytes and a few bytes of search state.
class ContentInspector {
 public:
  static constexpr std::size_t kHeadBytes = 4096;
  explicit ContentInspector(std::string_view name);
  void feed(ByteView bytes);
  // Whether more bytes can change the result.
  bool wants_more() const;
  // After the last byte: total is the content's size.
  void finish(std::uint64_t total, std::string_view where, Verdict& verdict);

 private:
  void search_ole(ByteView bytes);
  NameKind kind_;
  std::string extension_;
  Bytes head_;
  std::uint64_t fed_ = 0;
  bool ole_ = false;         // an OLE2 compound file: look for a VBA project to its end
  bool ole_macros_ = false;  // found one
  Bytes carry_;              // the last bytes of the previous piece, for matches across pieces
};

// Shared by every archive level of one file's scan.
struct WalkBudget {
  std::uint64_t expanded = 0;  // bytes decompressed so far
  std::uint64_t members = 0;
  std::uint64_t in_memory = 0;  // bytes of members held in memory right now
  std::uint32_t deepest = 0;
  bool stopped = false;  // a limit was reached: look no further
};

// Calls visit for each archive member held in memory (the scanner runs its detectors on it and
// walks it in turn); streams larger members through the content checks and nested archives
// itself. Not an archive: does nothing.
using MemberVisitor = std::function<void(const Item& member)>;
void walk_archive(const Item& item, const Limits& limits, WalkBudget& budget, Verdict& verdict,
                  const MemberVisitor& visit);

// Lowercase hex SHA-256.
std::string sha256_hex(ByteView bytes);

}  // namespace splitfs::scan::detail
