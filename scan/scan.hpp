// Malicious file checks: a verdict for a file's bytes before they are stored or after they are
// fetched. A Scanner runs its detectors (built-in heuristics, YARA, ClamAV) over a Source and
// returns a Verdict (clean, suspicious or malicious, naming the detector and rule behind each
// finding); a Policy turns the verdict into allow, warn or block.
//
// Guarantees: a scan reads its Source in bounded pieces, so memory does not grow with the file's
// size (a 10 GiB file costs what a 10 MiB one does, beyond time); archives are looked into with
// libarchive without writing anything to disk, within the depth, expansion and member limits of
// Limits (crossing a depth or expansion-ratio limit is itself a finding: a decompression bomb);
// a detector that cannot run (ClamAV without a signature database) is named in Verdict::notes and
// the scan goes on without it. Scanning is thread-safe: one Scanner serves any number of threads.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::scan {

enum class Severity : std::uint8_t { clean = 0, suspicious = 1, malicious = 2 };
std::string_view to_string(Severity severity);

enum class Action : std::uint8_t { allow, warn, block };
std::string_view to_string(Action action);
// "allow", "warn" or "block"; nullopt for anything else.
std::optional<Action> parse_action(std::string_view text);

// What to do with a file, by the worst severity found in it.
struct Policy {
  Action suspicious = Action::warn;
  Action malicious = Action::block;
  Action decide(Severity severity) const;
};

struct Finding {
  Severity severity = Severity::suspicious;
  std::string detector;  // "heuristics", "yara" or "clamav"
  std::string rule;      // the rule or signature that fired, e.g. "eicar", "masquerade.elf"
  std::string where;     // "" for the file itself; inside archives, the member's path
  std::string detail;    // one sentence for a person
};

struct ScanStats {
  std::uint64_t bytes = 0;           // the file's size
  std::uint64_t bytes_expanded = 0;  // archive members' bytes decompressed while looking inside
  std::uint64_t members = 0;         // archive members looked at
  std::uint32_t depth = 0;           // deepest archive nesting seen
  // Bytes YARA did not need to read: none of its rules' atoms (the literals it looks for first)
  // occur near them. Archive members' bytes count too.
  std::uint64_t bytes_yara_skipped = 0;
};

struct Verdict {
  Severity severity = Severity::clean;
  std::vector<Finding> findings;  // worst first; at most kMaxFindings
  // What was not checked, and why (a detector unavailable, a limit reached). Not findings.
  std::vector<std::string> notes;
  ScanStats stats;

  static constexpr std::size_t kMaxFindings = 64;
  // Adds a finding unless one with the same detector, rule and place is there already.
  void add(Finding finding);
  void note(std::string text);
  // The worst finding, or nullptr when clean.
  const Finding* worst() const { return findings.empty() ? nullptr : &findings.front(); }
  // "malicious: heuristics eicar (in a.zip/eicar.com)" and the like, for messages.
  std::string summary() const;
};

// The bytes to scan, read at any offset. Implementations throw a splitfs::Error (LocalIoError,
// or what fetching remote bytes raises) when bytes cannot be had.
class Source {
 public:
  virtual ~Source() = default;
  virtual std::uint64_t size() const = 0;
  // Fills out with the bytes at offset; returns how many (fewer only at the end).
  virtual std::size_t read_at(std::uint64_t offset, MutableByteView out) = 0;
  // Whether read_at may run on several threads at once (a detector may then read a large source
  // in parallel).
  virtual bool concurrent_reads() const { return false; }
};

// A local file, by path or by an open descriptor (borrowed: not closed here). Reads with pread,
// so a descriptor's own offset is left alone.
class FileSource : public Source {
 public:
  explicit FileSource(const std::filesystem::path& path);
  FileSource(int fd, std::filesystem::path path_for_messages);
  ~FileSource() override;
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;
  std::uint64_t size() const override { return size_; }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override;
  bool concurrent_reads() const override { return true; }  // pread

 private:
  int fd_ = -1;
  bool owned_ = false;
  std::uint64_t size_ = 0;
  std::filesystem::path path_;
};

// Bytes in memory (not copied: they must outlive the source).
class MemorySource : public Source {
 public:
  explicit MemorySource(ByteView bytes) : bytes_(bytes) {}
  std::uint64_t size() const override { return bytes_.size(); }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override;
  bool concurrent_reads() const override { return true; }

 private:
  ByteView bytes_;
};

// A file of known final size being written in order by another thread (a fetch's output): a
// read waits until the bytes it asks for are written. The writer calls written() as it goes and
// abandon() once it writes no more (at the end or early): a read past the written bytes then
// throws instead of waiting for bytes that will never come. Reads use pread on the descriptor
// (borrowed, not closed here).
class GrowingFileSource : public Source {
 public:
  GrowingFileSource(int fd, std::uint64_t size, std::filesystem::path path_for_messages);
  std::uint64_t size() const override { return size_; }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override;
  bool concurrent_reads() const override { return true; }

  // The first `bytes` of the file are written.
  void written(std::uint64_t bytes);
  void abandon();

 private:
  int fd_;
  std::uint64_t size_;
  std::filesystem::path path_;
  std::mutex mutex_;
  std::condition_variable grown_;
  std::uint64_t written_ = 0;
  bool abandoned_ = false;
};

// Content made of fixed-size segments produced on demand (the mount's write-back file over its
// stored base): load(s, out) fills out with segment s (every segment but the last is
// segment_bytes long). Keeps the last two segments each reading thread loaded, so memory stays two
// segments per thread whatever the size. With concurrent_loads, load may run on several threads at
// once, and a detector may read the source in parallel.
class SegmentSource : public Source {
 public:
  using Loader = std::function<void(std::uint64_t segment, Bytes& out)>;
  SegmentSource(std::uint64_t size, std::uint32_t segment_bytes, Loader load,
                bool concurrent_loads = false);
  std::uint64_t size() const override { return size_; }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override;
  bool concurrent_reads() const override { return concurrent_loads_; }

 private:
  struct Slot {
    std::uint64_t segment = ~std::uint64_t{0};
    Bytes bytes;
  };
  struct Slots {
    std::array<Slot, 2> slot;
    std::size_t next = 0;
  };
  Slots& slots_of_this_thread();
  const Bytes& segment(Slots& slots, std::uint64_t s);
  std::uint64_t size_;
  std::uint32_t segment_bytes_;
  Loader load_;
  bool concurrent_loads_;
  std::mutex mutex_;  // guards the map, not the slots: each thread touches only its own
  std::map<std::thread::id, Slots> slots_;
};

// Bounds of looking into archives. Crossing max_depth or the expansion ratio is a finding
// (a decompression bomb); the other limits only stop the look (a note says so).
struct Limits {
  std::uint32_t max_depth = 8;                     // archives within archives
  std::uint64_t max_ratio = 100;                   // expanded bytes per archive byte, per archive
  std::uint64_t ratio_floor = 16u << 20;           // the ratio counts only past this expansion
  std::uint64_t max_expanded = 4ull << 30;         // decompressed bytes looked at per file
  std::uint64_t max_members = 1'000'000;           // archive members looked at per file
  std::uint64_t member_memory = 32u << 20;         // members held in memory at once (all levels)
  std::uint64_t max_member_in_memory = 16u << 20;  // larger members are streamed (no YARA)
  friend bool operator==(const Limits&, const Limits&) = default;
};

struct Settings {
  bool heuristics = true;
  bool bundled_yara_rules = true;
  // Folders of YARA rules (*.yar, *.yara; not recursive) besides the bundled ones.
  std::vector<std::filesystem::path> yara_rule_dirs;
  // ClamAV's signature folder (freshclam's /var/lib/clamav, or one with custom .hdb/.ndb
  // files); empty: ClamAV is not used.
  std::filesystem::path clamav_database;
  // ClamAV skips files larger than this (ClamAV's own default; it reads about 70 MB/s), and
  // stops after four times this inside archives.
  std::uint64_t clamav_max_bytes = 100u << 20;
  Limits limits;
  friend bool operator==(const Settings&, const Settings&) = default;
};

// One thing to scan: a whole file, or an archive member (then held in memory).
struct Item {
  Source& source;
  std::string_view name;   // the file's or member's name, for extension checks
  std::string_view where;  // "" for the file itself, else the member's path ("a.zip/b/c.exe")
  std::uint32_t depth = 0;
};

namespace detail {
struct AheadParts;
}

// A check done ahead of a file still being written from its start (Scanner::scan_ahead): what
// the detectors that can look at parts of a file found in its first covered() bytes.
class ScanAhead {
 public:
  ScanAhead();
  // Parts to be checked from `from` on, to append() to the ScanAhead that covers up to there (so
  // another thread can check the next part while the first is in use).
  explicit ScanAhead(std::uint64_t from);
  ~ScanAhead();
  ScanAhead(ScanAhead&&) noexcept;
  ScanAhead& operator=(ScanAhead&&) noexcept;
  // The bytes [from, covered()) are checked.
  std::uint64_t covered() const;
  // Takes later's parts when they start at covered() and come from the same scanner; false (and
  // nothing changes) otherwise.
  bool append(ScanAhead&& later);

 private:
  friend class Scanner;
  std::unique_ptr<detail::AheadParts> parts_;
};

// How far past its end a part checked ahead is read, so that a string across the end is found:
// Scanner::scan_ahead(source, end) needs the bytes up to end + kScanOverlap final (or the file's).
inline constexpr std::uint64_t kScanOverlap = 4096;

class Detector {
 public:
  virtual ~Detector() = default;
  virtual std::string_view name() const = 0;
  // Empty when the detector can scan; else why not (the scan goes on without it). The first
  // call may load the detector's engine.
  virtual std::string unavailable() = 0;
  // Whether to show it archive members too (false for a detector that opens archives itself).
  virtual bool wants_members() const = 0;
  virtual void scan(const Item& item, Verdict& verdict) = 0;
  // Whether scan() reads a file of `size` bytes through; false for one that reads its first bytes
  // only (and the whole only of the rare kinds it looks into), or skips files that large.
  virtual bool reads_through(std::uint64_t /*size*/) const { return true; }
  // Whether scan_part() can check parts of a file.
  virtual bool takes_parts() const { return false; }
  // When takes_parts() (see Scanner::scan_ahead): checks source's bytes [ahead.covered, end) into
  // ahead.
  virtual void scan_part(Source& source, std::uint64_t end, detail::AheadParts& ahead);
  // scan() of a whole file whose first ahead.covered bytes scan_part() checked.
  virtual void scan_rest(const Item& item, const detail::AheadParts& ahead, Verdict& verdict);
};

class Scanner {
 public:
  // Builds the detectors the settings ask for; YARA rules are compiled now (throws
  // splitfs::ConfigError naming the file and line of a rule that does not compile), ClamAV's
  // database loads on the first scan.
  explicit Scanner(const Settings& settings);
  // The built-in detectors plus `extra` (run after them).
  Scanner(const Settings& settings, std::vector<std::unique_ptr<Detector>> extra);
  ~Scanner();
  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // One Scanner per distinct settings in this process (engines load once, however many clients).
  static std::shared_ptr<Scanner> shared(const Settings& settings);

  // Scans source, a file called name (only its extension matters). With `ahead` (from
  // scan_ahead() over these same bytes, unchanged since), the detectors that checked parts of it
  // read only the rest.
  Verdict scan(Source& source, std::string_view name, const ScanAhead* ahead = nullptr);

  // Whether scan_ahead() can take part of a check off its end: the YARA rules only ask which
  // strings occur, so a file can be scanned a part at a time, each as soon as its bytes are final.
  bool scans_ahead() const;
  // Checks source's bytes [ahead.covered(), end) for the detectors that can take parts, reading
  // kScanOverlap past end where the source has them. The caller keeps the bytes it saw unchanged
  // until it hands ahead to scan(). Throws what the source throws.
  void scan_ahead(Source& source, std::uint64_t end, ScanAhead& ahead);
  // Whether scan() with a ScanAhead still reads the bytes checked ahead of a file of `size` bytes
  // through: a ready detector that takes no parts does (ClamAV, up to its size limit), beyond what
  // any scan reads of a file's head and tail (its kind, an archive's directory). Loads what is not
  // loaded yet.
  bool rereads_ahead(std::uint64_t size);

  struct DetectorStatus {
    std::string name;
    std::string unavailable;  // empty: ready
  };
  // Loads what is not loaded yet.
  std::vector<DetectorStatus> status();

 private:
  Settings settings_;
  std::vector<std::unique_ptr<Detector>> detectors_;
};

}  // namespace splitfs::scan
