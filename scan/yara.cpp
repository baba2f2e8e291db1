// The YARA detector: the bundled rules and the user's rule folders, compiled once, run over a file
// in blocks (never the whole file in memory).
#include <yara.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <splitfs/errors.hpp>

#include "scan/detectors.hpp"

namespace splitfs::scan::detail {

namespace {

namespace fs = std::filesystem;

// Blocks YARA sees; each overlaps the next by kOverlap bytes, so a string up to that long is
// found across a block boundary.
constexpr std::size_t kBlockBytes = 1u << 20;
constexpr std::size_t kOverlap = 4096;
constexpr int kTimeoutSeconds = 120;
constexpr std::size_t kMaxRuleFiles = 1000;
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
// and keep pointers into it until the scan ends.
class BlockIterator {
 public:
  explicit BlockIterator(Source& source) : source_(source) {
    iterator_.context = this;
    iterator_.first = &BlockIterator::first;
    iterator_.next = &BlockIterator::next;
    iterator_.file_size = &BlockIterator::file_size;
    iterator_.last_error = ERROR_SUCCESS;
  }
  YR_MEMORY_BLOCK_ITERATOR* get() { return &iterator_; }
  std::exception_ptr failure;

 private:
  static BlockIterator& self(YR_MEMORY_BLOCK_ITERATOR* it) {
    return *static_cast<BlockIterator*>(it->context);
  }
  static YR_MEMORY_BLOCK* first(YR_MEMORY_BLOCK_ITERATOR* it) { return self(it).at(0); }
  static YR_MEMORY_BLOCK* next(YR_MEMORY_BLOCK_ITERATOR* it) {
    BlockIterator& me = self(it);
    return me.at(me.index_ + 1);
  }
  static uint64_t file_size(YR_MEMORY_BLOCK_ITERATOR* it) { return self(it).source_.size(); }
  static const uint8_t* fetch(YR_MEMORY_BLOCK* block) {
    return static_cast<BlockIterator*>(block->context)->load(block);
  }

  YR_MEMORY_BLOCK* at(std::uint64_t index) {
    const std::uint64_t base = index * kBlockBytes;
    if (base >= source_.size() && !(index == 0 && source_.size() == 0))
      return nullptr;
    index_ = index;
    block_.base = base;
    block_.size = static_cast<std::size_t>(
        std::min<std::uint64_t>(kBlockBytes + kOverlap, source_.size() - base));
    block_.context = this;
    block_.fetch_data = &BlockIterator::fetch;
    return &block_;
  }

  const uint8_t* load(YR_MEMORY_BLOCK* block) {
    Bytes& buffer = block->base == 0 ? first_ : other_;
    std::uint64_t& loaded = block->base == 0 ? first_base_ : other_base_;
    if (loaded == block->base && buffer.size() == block->size)
      return buffer.data();
    try {
      buffer.resize(block->size);
      const std::size_t n = source_.read_at(block->base, buffer);
      buffer.resize(n);
      block->size = n;
      loaded = block->base;
      return buffer.data();
    } catch (...) {
      failure = std::current_exception();
      loaded = ~std::uint64_t{0};
      return nullptr;
    }
  }

  Source& source_;
  YR_MEMORY_BLOCK_ITERATOR iterator_{};
  YR_MEMORY_BLOCK block_{};
  std::uint64_t index_ = 0;
  Bytes first_;
  Bytes other_;
  std::uint64_t first_base_ = ~std::uint64_t{0};
  std::uint64_t other_base_ = ~std::uint64_t{0};
};

struct ScanContext {
  Verdict& verdict;
  std::string where;
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

int on_scan_message(YR_SCAN_CONTEXT*, int message, void* data, void* context) {
  if (message != CALLBACK_MSG_RULE_MATCHING)
    return CALLBACK_CONTINUE;
  auto* scan = static_cast<ScanContext*>(context);
  const auto* rule = static_cast<const YR_RULE*>(data);
  // Rules say how bad a match is in their meta; a match is malicious unless they say otherwise.
  const std::string severity = meta_string(rule, "severity");
  std::string detail = meta_string(rule, "description");
  if (detail.empty())
    detail = "matched YARA rule " + std::string(rule->identifier);
  const std::string ns = rule->ns && rule->ns->name ? rule->ns->name : "";
  scan->verdict.add(
      {severity == "suspicious" ? Severity::suspicious : Severity::malicious, "yara",
       ns.empty() || ns == "default" ? std::string(rule->identifier) : ns + ":" + rule->identifier,
       scan->where, detail});
  return CALLBACK_CONTINUE;
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
  }

  std::string_view name() const override { return "yara"; }
  std::string unavailable() override { return rules_ ? "" : "no rules"; }
  bool wants_members() const override { return true; }

  void scan(const Item& item, Verdict& verdict) override {
    BlockIterator blocks(item.source);
    ScanContext context{verdict, std::string(item.where)};
    const int result = yr_rules_scan_mem_blocks(rules_.get(), blocks.get(), SCAN_FLAGS_FAST_MODE,
                                                on_scan_message, &context, kTimeoutSeconds);
    if (blocks.failure)
      std::rethrow_exception(blocks.failure);
    if (result == ERROR_SCAN_TIMEOUT) {
      verdict.note("yara: timed out after " + std::to_string(kTimeoutSeconds) + " s" +
                   (item.where.empty() ? "" : " on " + std::string(item.where)));
    } else if (result != ERROR_SUCCESS) {
      verdict.note("yara: scan failed (error " + std::to_string(result) + ")" +
                   (item.where.empty() ? "" : " on " + std::string(item.where)));
    }
  }

 private:
  std::unique_ptr<YR_RULES, RulesDeleter> rules_;
};

}  // namespace

std::unique_ptr<Detector> make_yara(const Settings& settings) {
  return std::make_unique<Yara>(settings);
}

}  // namespace splitfs::scan::detail
