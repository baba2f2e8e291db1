// The YARA detector: the bundled rules and the user's rule folders, compiled once, run over a file
// in blocks (never the whole file in memory).
#include <yara.h>

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <splitfs/errors.hpp>
#include <thread>

#include "scan/detectors.hpp"
#include "scan/prefilter.hpp"

namespace splitfs::scan::detail {

namespace {

namespace fs = std::filesystem;

// Blocks YARA sees; each overlaps the next by kOverlap bytes, so a string up to that long is
// found across a block boundary.
constexpr std::size_t kBlockBytes = 1u << 20;
constexpr std::uint64_t kOverlap = kScanOverlap;
constexpr int kTimeoutSeconds = 120;
constexpr std::size_t kMaxRuleFiles = 1000;
// A source this large that can be read from two threads is scanned as two halves at once when the
// rules allow it (see Yara::presence_only_).
constexpr std::uint64_t kParallelMinBytes = 64u << 20;
// Between the matches a re-scan puts side by side: bytes no bundled pattern crosses.
constexpr std::size_t kSeparatorBytes = 128;
constexpr std::uint8_t kSeparator = 0x01;
constexpr std::uintmax_t kMaxRuleFileBytes = 16u << 20;

void initialize_yara() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (yr_initialize() != ERROR_SUCCESS)
      throw Error("libyara failed to initialize");
  });
}

struct CompilerDeleter {
  void operator()(YR_COMPILER* c) const { yr_compiler_destroy(c); }
};
struct RulesDeleter {
  void operator()(YR_RULES* r) const { yr_rules_destroy(r); }
};
struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

struct CompileErrors {
  std::string first;
};

void on_compile_message(int level, const char* file, int line, const YR_RULE*, const char* message,
                        void* context) {
  auto* errors = static_cast<CompileErrors*>(context);
  if (level == YARA_ERROR_LEVEL_ERROR && errors->first.empty()) {
    errors->first = std::string(file ? file : "rule") + ":" + std::to_string(line) + ": " +
                    (message ? message : "error");
  }
}

// The rule files of a folder, in name order.
std::vector<fs::path> rule_files(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw ConfigError("YARA rule folder " + dir.string() + " does not exist");
  std::vector<fs::path> out;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string ext = p.extension().string();
    if ((ext == ".yar" || ext == ".yara") && it->is_regular_file(ec)) {
      out.push_back(p);
      if (out.size() > kMaxRuleFiles)
        throw ConfigError("YARA rule folder " + dir.string() + " holds more than " +
                          std::to_string(kMaxRuleFiles) + " rule files");
    }
  }
  if (ec)
    throw ConfigError("cannot read YARA rule folder " + dir.string() + ": " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

// Hands a Source to YARA block by block. Block 0 keeps its own buffer: modules (pe, elf) parse it
// and keep pointers into it until the scan ends. With a prefilter, YARA gets only the windows of
// each block where its rules can match.
class BlockIterator {
 public:
  BlockIterator(Source& source, const AtomPrefilter* prefilter) : source_(source) {
    iterator_.context = this;
    iterator_.first = &BlockIterator::first;
    iterator_.next = &BlockIterator::next;
    iterator_.file_size = &BlockIterator::file_size;
    iterator_.last_error = ERROR_SUCCESS;
    if (prefilter != nullptr)
      prefiltered_.emplace(*prefilter);
  }
  YR_MEMORY_BLOCK_ITERATOR* get() { return &iterator_; }
  // Bytes of the source YARA did not see (none without a prefilter).
  std::uint64_t skipped() const { return skipped_; }
  std::exception_ptr failure;

 private:
  struct Prefiltered {
    explicit Prefiltered(const AtomPrefilter& f) : filter(f), scratch(f) {}
    const AtomPrefilter& filter;
    AtomPrefilter::Scratch scratch;
  };

  static BlockIterator& self(YR_MEMORY_BLOCK_ITERATOR* it) {
    return *static_cast<BlockIterator*>(it->context);
  }
  static YR_MEMORY_BLOCK* first(YR_MEMORY_BLOCK_ITERATOR* it) { return self(it).from(0); }
  static YR_MEMORY_BLOCK* next(YR_MEMORY_BLOCK_ITERATOR* it) {
    BlockIterator& me = self(it);
    if (++me.window_ < me.windows_.size())
      return me.emit();
    return me.from(me.index_ + 1);
  }
  static uint64_t file_size(YR_MEMORY_BLOCK_ITERATOR* it) { return self(it).source_.size(); }
  static const uint8_t* fetch(YR_MEMORY_BLOCK* block) {
    return static_cast<BlockIterator*>(block->context)->data();
  }

  // The first window of block `index` or a later one; nullptr past the end or on a failed read.
  // Without a prefilter a block is read only when YARA asks for its bytes: its conditions may walk
  // the blocks again to read a few bytes of one.
  YR_MEMORY_BLOCK* from(std::uint64_t index) {
    for (;; ++index) {
      const std::uint64_t base = index * kBlockBytes;
      if (base >= source_.size() && !(index == 0 && source_.size() == 0))
        return nullptr;
      index_ = index;
      window_ = 0;
      if (!prefiltered_) {
        windows_.assign(1, Window{0, static_cast<std::size_t>(std::min<std::uint64_t>(
                                         kBlockBytes + kOverlap, source_.size() - base))});
        return emit();
      }
      if (!load(index))
        return nullptr;
      const Bytes& buffer = buffer_of(index);
      if (!prefiltered_->filter.windows(buffer, prefiltered_->scratch, windows_))
        windows_.assign(1, Window{0, buffer.size()});
      count_skipped(index, buffer.size());
      if (!windows_.empty())
        return emit();
    }
  }

  YR_MEMORY_BLOCK* emit() {
    const Window& w = windows_[window_];
    block_.base = index_ * kBlockBytes + w.begin;
    block_.size = w.end - w.begin;
    block_.context = this;
    block_.fetch_data = &BlockIterator::fetch;
    return &block_;
  }

  // The bytes of the block last handed out (always the one YARA asks for).
  const uint8_t* data() {
    if (!load(index_))
      return nullptr;
    const Bytes& buffer = buffer_of(index_);
    const Window& w = windows_[window_];
    block_.size = std::min(w.end, buffer.size()) - w.begin;  // a source shorter than it said
    return buffer.data() + w.begin;
  }

  // Block 0's buffer, or the one all others share.
  Bytes& buffer_of(std::uint64_t index) { return index == 0 ? first_ : other_; }

  bool load(std::uint64_t index) {
    const std::uint64_t base = index * kBlockBytes;
    Bytes& buffer = buffer_of(index);
    std::uint64_t& loaded = index == 0 ? first_base_ : other_base_;
    if (loaded == base)
      return true;
    try {
      buffer.resize(static_cast<std::size_t>(
          std::min<std::uint64_t>(kBlockBytes + kOverlap, source_.size() - base)));
      buffer.resize(source_.read_at(base, buffer));
      loaded = base;
      return true;
    } catch (...) {
      failure = std::current_exception();
      loaded = ~std::uint64_t{0};
      return false;
    }
  }

  // The bytes of block `index` before the next one starts that no window covers. Counted once per
  // block: YARA's conditions may walk the blocks again.
  void count_skipped(std::uint64_t index, std::size_t size) {
    if (index < counted_)
      return;
    counted_ = index + 1;
    const std::size_t own = std::min<std::size_t>(size, kBlockBytes);
    std::size_t seen = 0;
    for (const Window& w : windows_)
      seen += w.begin < own ? std::min(w.end, own) - w.begin : 0;
    skipped_ += own - seen;
  }

  Source& source_;
  std::optional<Prefiltered> prefiltered_;
  YR_MEMORY_BLOCK_ITERATOR iterator_{};
  YR_MEMORY_BLOCK block_{};
  std::uint64_t index_ = 0;
  std::vector<Window> windows_;
  std::size_t window_ = 0;
  std::uint64_t counted_ = 0;
  std::uint64_t skipped_ = 0;
  Bytes first_;
  Bytes other_;
  std::uint64_t first_base_ = ~std::uint64_t{0};
  std::uint64_t other_base_ = ~std::uint64_t{0};
};

// Bytes [offset, offset + size) of another source.
class RangeSource : public Source {
 public:
  RangeSource(Source& base, std::uint64_t offset, std::uint64_t size)
      : base_(base), offset_(offset), size_(size) {}
  std::uint64_t size() const override { return size_; }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override {
    if (offset >= size_)
      return 0;
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), size_ - offset));
    return base_.read_at(offset_ + offset, out.first(n));
  }
  bool concurrent_reads() const override { return base_.concurrent_reads(); }

 private:
  Source& base_;
  std::uint64_t offset_;
  std::uint64_t size_;
};

struct ScanContext {
  Verdict& verdict;
  std::string where;
  PartFound* part = nullptr;  // set: collect instead of adding findings
};

std::string meta_string(const YR_RULE* rule, const char* key) {
  const YR_META* meta = nullptr;
  yr_rule_metas_foreach(rule, meta) {
    if (meta->identifier && std::string_view(meta->identifier) == key &&
        meta->type == META_TYPE_STRING && meta->string) {
      return meta->string;
    }
  }
  return {};
}

void add_finding(const YR_RULE* rule, const std::string& where, Verdict& verdict);

int on_scan_message(YR_SCAN_CONTEXT* yara, int message, void* data, void* context) {
  auto* scan = static_cast<ScanContext*>(context);
  const auto* rule = static_cast<const YR_RULE*>(data);
  if (scan->part != nullptr && message == CALLBACK_MSG_RULE_NOT_MATCHING) {
    const YR_STRING* string = nullptr;
    yr_rule_strings_foreach(rule, string) {
      const YR_MATCH* match = nullptr;
      yr_string_matches_foreach(yara, string, match) {
        scan->part->strings[rule].emplace_back(
            static_cast<std::uint64_t>(match->base + match->offset),
            static_cast<std::uint32_t>(match->match_length));
        break;  // one place per string is enough: conditions ask only whether it occurs
      }
    }
    return CALLBACK_CONTINUE;
  }
  if (message != CALLBACK_MSG_RULE_MATCHING)
    return CALLBACK_CONTINUE;
  if (scan->part != nullptr)
    scan->part->matched.push_back(rule);
  else
    add_finding(rule, scan->where, scan->verdict);
  return CALLBACK_CONTINUE;
}

void add_finding(const YR_RULE* rule, const std::string& where, Verdict& verdict) {
  // Rules say how bad a match is in their meta; a match is malicious unless they say otherwise.
  const std::string severity = meta_string(rule, "severity");
  std::string detail = meta_string(rule, "description");
  if (detail.empty())
    detail = "matched YARA rule " + std::string(rule->identifier);
  const std::string ns = rule->ns && rule->ns->name ? rule->ns->name : "";
  verdict.add(
      {severity == "suspicious" ? Severity::suspicious : Severity::malicious, "yara",
       ns.empty() || ns == "default" ? std::string(rule->identifier) : ns + ":" + rule->identifier,
       where, detail});
}

// Whether every condition in `text` (YARA source) is string names joined by and/or, with
// parentheses: a rule like that matches a file exactly when it matches on the set of its strings
// found anywhere in it, so the file can be scanned in parts. Returns how many conditions it saw,
// or nullopt when one is anything else (counts, offsets, filesize, modules, not, other rules).
std::optional<std::size_t> presence_conditions(std::string_view text) {
  std::size_t count = 0;
  for (std::size_t at = text.find("condition:"); at != std::string_view::npos;
       at = text.find("condition:", at)) {
    at += std::string_view("condition:").size();
    const std::size_t end = text.find('}', at);
    if (end == std::string_view::npos)
      return std::nullopt;
    const std::string_view condition = text.substr(at, end - at);
    for (std::size_t i = 0; i < condition.size();) {
      const char c = condition[i];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '(' || c == ')') {
        ++i;
        continue;
      }
      std::size_t j = i + 1;
      while (j < condition.size() &&
             (std::isalnum(static_cast<unsigned char>(condition[j])) || condition[j] == '_'))
        ++j;
      const std::string_view word = condition.substr(i, j - i);
      if (!(word == "and" || word == "or" || (c == '$' && word.size() > 1)))
        return std::nullopt;
      i = j;
    }
    ++count;
    at = end;
  }
  return count;
}

class Yara : public Detector {
 public:
  explicit Yara(const Settings& settings) {
    initialize_yara();
    YR_COMPILER* raw = nullptr;
    if (yr_compiler_create(&raw) != ERROR_SUCCESS)
      throw std::bad_alloc();
    std::unique_ptr<YR_COMPILER, CompilerDeleter> compiler(raw);
    CompileErrors errors;
    yr_compiler_set_callback(compiler.get(), on_compile_message, &errors);
    const auto fail = [&](const std::string& what) {
      throw ConfigError("YARA rules do not compile: " +
                        (errors.first.empty() ? what : errors.first));
    };
    std::size_t files = 0;
    if (settings.bundled_yara_rules) {
      for (const BundledRule& rule : bundled_rules()) {
        if (yr_compiler_add_string(compiler.get(), rule.text, "splitfs") != 0)
          fail(std::string("bundled ") + rule.file);
        ++files;
      }
    }
    for (const fs::path& dir : settings.yara_rule_dirs) {
      for (const fs::path& file : rule_files(dir)) {
        std::error_code ec;
        if (fs::file_size(file, ec) > kMaxRuleFileBytes || ec)
          throw ConfigError("YARA rule file " + file.string() + " is unreadable or too large");
        std::unique_ptr<std::FILE, FileCloser> in(std::fopen(file.c_str(), "r"));
        if (!in)
          throw ConfigError("cannot read YARA rule file " + file.string());
        // Each file gets its own namespace: rules of two files may share a name.
        const std::string ns = file.stem().string();
        if (yr_compiler_add_file(compiler.get(), in.get(), ns.c_str(), file.c_str()) != 0)
          fail(file.string());
        ++files;
      }
    }
    if (files == 0)
      return;
    YR_RULES* rules = nullptr;
    if (yr_compiler_get_rules(compiler.get(), &rules) != ERROR_SUCCESS)
      fail("out of memory");
    rules_.reset(rules);
    if (settings.yara_rule_dirs.empty()) {
      // Only the bundled rules, whose text is at hand: each must be a presence-only condition.
      std::size_t conditions = 0;
      bool presence = true;
      for (const BundledRule& rule : bundled_rules()) {
        const auto n = presence_conditions(rule.text);
        presence = presence && n.has_value();
        conditions += n.value_or(0);
      }
      std::size_t compiled = 0;
      const YR_RULE* rule = nullptr;
      yr_rules_foreach(rules_.get(), rule) {
        ++compiled;
      }
      presence_only_ = presence && conditions == compiled;
      // Where no string can match, such rules learn nothing: YARA may skip it.
      if (presence_only_)
        prefilter_ = AtomPrefilter::of(*rules_);
    }
  }

  std::string_view name() const override { return "yara"; }
  std::string unavailable() override { return rules_ ? "" : "no rules"; }
  bool wants_members() const override { return true; }

  void scan(const Item& item, Verdict& verdict) override {
    if (presence_only_) {
      const Ranges ranges = halves(item.source, 0, item.source.size());
      if (ranges.size() == 2) {
        merge(item, scan_ranges(item.source, ranges), verdict);
        return;
      }
    }
    ScanContext context{verdict, std::string(item.where)};
    verdict.stats.bytes_yara_skipped += run(item.source, item.where, context, SCAN_FLAGS_FAST_MODE);
  }

  bool takes_parts() const override { return presence_only_; }

  void scan_part(Source& source, std::uint64_t end, AheadParts& ahead) override {
    if (end > ahead.covered) {
      ahead.parts.push_back(std::move(scan_ranges(source, {{ahead.covered, end}}).front()));
      ahead.covered = end;
    }
  }

  void scan_rest(const Item& item, const AheadParts& ahead, Verdict& verdict) override {
    const std::uint64_t size = item.source.size();
    if (!presence_only_ || ahead.covered > size) {
      scan(item, verdict);
      return;
    }
    std::vector<PartFound> parts = ahead.parts;
    if (size > ahead.covered) {
      for (PartFound& found : scan_ranges(item.source, halves(item.source, ahead.covered, size)))
        parts.push_back(std::move(found));
    }
    merge(item, parts, verdict);
  }

 private:
  static constexpr int kPartFlags = SCAN_FLAGS_FAST_MODE | SCAN_FLAGS_REPORT_RULES_MATCHING |
                                    SCAN_FLAGS_REPORT_RULES_NOT_MATCHING;

  // Returns the bytes the prefilter let YARA skip.
  std::uint64_t run(Source& source, std::string_view where, ScanContext& context, int flags) {
    BlockIterator blocks(source, prefilter_ ? &*prefilter_ : nullptr);
    const int result = yr_rules_scan_mem_blocks(rules_.get(), blocks.get(), flags, on_scan_message,
                                                &context, kTimeoutSeconds);
    if (blocks.failure)
      std::rethrow_exception(blocks.failure);
    if (result == ERROR_SCAN_TIMEOUT) {
      context.verdict.note("yara: timed out after " + std::to_string(kTimeoutSeconds) + " s" +
                           (where.empty() ? "" : " on " + std::string(where)));
    } else if (result != ERROR_SUCCESS) {
      context.verdict.note("yara: scan failed (error " + std::to_string(result) + ")" +
                           (where.empty() ? "" : " on " + std::string(where)));
    }
    return blocks.skipped();
  }

  using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;

  // [begin, end) in two halves to scan at once where the source allows it and the range is large
  // enough to pay, else whole.
  static Ranges halves(const Source& source, std::uint64_t begin, std::uint64_t end) {
    if (!source.concurrent_reads() || end - begin < kParallelMinBytes)
      return {{begin, end}};
    const std::uint64_t middle = begin + (end - begin) / 2;
    return {{begin, middle}, {middle, end}};
  }

  // Scans each range [begin, end) of source, reading kOverlap past its end (as blocks do) so a
  // string across it is found; two ranges run on two threads at once.
  std::vector<PartFound> scan_ranges(Source& source, const Ranges& ranges) {
    std::vector<PartFound> parts(ranges.size());
    const auto scan_one = [&](std::size_t i) {
      const auto [begin, end] = ranges[i];
      RangeSource range(source, begin, std::min(source.size(), end + kOverlap) - begin);
      Verdict notes;
      ScanContext context{notes, {}, &parts[i]};
      parts[i].start = begin;
      parts[i].skipped = run(range, {}, context, kPartFlags);
      parts[i].notes = std::move(notes.notes);
    };
    assert(ranges.size() <= 2);
    if (ranges.size() < 2) {
      for (std::size_t i = 0; i < ranges.size(); ++i)
        scan_one(i);
      return parts;
    }
    std::exception_ptr failure;
    std::thread other([&] {
      try {
        scan_one(1);
      } catch (...) {
        failure = std::current_exception();
      }
    });
    try {
      scan_one(0);
    } catch (...) {
      other.join();
      throw;
    }
    other.join();
    if (failure)
      std::rethrow_exception(failure);
    return parts;
  }

  // The verdict of parts that together cover the file: the rules that matched in one, then the
  // rules that matched in none but found strings in several: their matches, read back and set
  // side by side, are scanned once more, so a rule needing strings from different parts still
  // matches.
  void merge(const Item& item, const std::vector<PartFound>& parts, Verdict& verdict) {
    std::set<const YR_RULE*> matched;
    for (const PartFound& part : parts) {
      verdict.stats.bytes_yara_skipped += part.skipped;
      for (const std::string& note : part.notes)
        verdict.note(note);
      for (const YR_RULE* rule : part.matched) {
        if (matched.insert(rule).second)
          add_finding(rule, std::string(item.where), verdict);
      }
    }
    std::map<const YR_RULE*, std::size_t> parts_with_strings;
    for (const PartFound& part : parts) {
      for (const auto& [rule, places] : part.strings) {
        if (!matched.count(rule))
          ++parts_with_strings[rule];
      }
    }
    Bytes joined;
    std::set<const YR_RULE*> again;
    for (const PartFound& part : parts) {
      for (const auto& [rule, places] : part.strings) {
        if (matched.count(rule) || parts_with_strings[rule] < 2)
          continue;
        again.insert(rule);
        for (const auto& [offset, length] : places) {
          const std::size_t at = joined.size();
          joined.resize(at + length);
          joined.resize(at + item.source.read_at(part.start + offset,
                                                 MutableByteView(joined.data() + at, length)));
          joined.insert(joined.end(), kSeparatorBytes, kSeparator);
        }
      }
    }
    if (again.empty())
      return;
    MemorySource source(joined);
    PartFound rescanned;
    ScanContext context{verdict, std::string(item.where), &rescanned};
    run(source, item.where, context, kPartFlags);
    for (const YR_RULE* rule : rescanned.matched) {
      if (again.count(rule))
        add_finding(rule, std::string(item.where), verdict);
    }
  }

  std::unique_ptr<YR_RULES, RulesDeleter> rules_;
  // Every rule's condition only asks which strings occur (presence_conditions): a large file may
  // be scanned in two halves at once.
  bool presence_only_ = false;
  std::optional<AtomPrefilter> prefilter_;  // only for presence-only rules
};

}  // namespace

std::unique_ptr<Detector> make_yara(const Settings& settings) {
  return std::make_unique<Yara>(settings);
}

}  // namespace splitfs::scan::detail
