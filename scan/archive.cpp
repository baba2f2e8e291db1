// Looking into archives with libarchive, in memory: members small enough are held in memory and
// handed to the scanner's detectors (and walked in turn); larger ones stream through the content
// checks and, when they are archives themselves, through a nested walk. Every decompressed byte
// is counted against the archive it came from, so a decompression bomb is caught by its ratio
// (from the sizes its headers declare, before anything is expanded, or while expanding) or by
// its depth, and nothing is ever written to disk.
#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "scan/detectors.hpp"

namespace splitfs::scan::detail {

namespace {

constexpr std::size_t kBlock = 64u << 10;
constexpr std::size_t kMaxWhere = 1024;

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<archive, ArchiveDeleter>;

// Filters compiled into libarchive. One it lacks would run an external program on untrusted
// bytes, so only those that register without falling back to one are used.
using Register = int (*)(archive*);
const std::vector<Register>& native_filters() {
  static const std::vector<Register> filters = [] {
    std::vector<Register> out;
    for (Register r : {archive_read_support_filter_gzip, archive_read_support_filter_bzip2,
                       archive_read_support_filter_xz, archive_read_support_filter_lzma,
                       archive_read_support_filter_lzip, archive_read_support_filter_zstd,
                       archive_read_support_filter_lz4, archive_read_support_filter_compress}) {
      ArchivePtr probe(archive_read_new());
      if (probe && r(probe.get()) == ARCHIVE_OK)
        out.push_back(r);
    }
    return out;
  }();
  return filters;
}

// A reader for untrusted input: archive formats only (no mtree, which would open local files),
// plus raw for a single compressed stream; raw_only: that alone.
ArchivePtr new_reader(bool seekable, bool raw_only) {
  ArchivePtr a(archive_read_new());
  if (!a)
    throw std::bad_alloc();
  for (Register r : native_filters())
    r(a.get());
  if (raw_only) {
    archive_read_support_format_raw(a.get());
    return a;
  }
  if (seekable)
    archive_read_support_format_zip_seekable(a.get());
  else
    archive_read_support_format_zip_streamable(a.get());
  for (Register r : {archive_read_support_format_tar, archive_read_support_format_7zip,
                     archive_read_support_format_cpio, archive_read_support_format_ar,
                     archive_read_support_format_cab, archive_read_support_format_iso9660,
                     archive_read_support_format_lha, archive_read_support_format_rar,
                     archive_read_support_format_rar5, archive_read_support_format_xar,
                     archive_read_support_format_raw}) {
    r(a.get());
  }
  return a;
}

// What libarchive reads from.
class Input {
 public:
  virtual ~Input() = default;
  virtual la_ssize_t read(const void** out) = 0;
  virtual bool seekable() const = 0;
  virtual la_int64_t seek(la_int64_t, int) { return ARCHIVE_FATAL; }
  virtual la_int64_t skip(la_int64_t request) = 0;
  // The archive's size so far (all of it, for a Source).
  virtual std::uint64_t container_bytes() const = 0;
  std::exception_ptr failure;  // an exception from a Source, rethrown after libarchive returns
};

class SourceInput : public Input {
 public:
  explicit SourceInput(Source& source) : source_(source), buffer_(kBlock) {}
  la_ssize_t read(const void** out) override {
    const std::size_t n = source_.read_at(position_, buffer_);
    position_ += n;
    *out = buffer_.data();
    return static_cast<la_ssize_t>(n);
  }
  bool seekable() const override { return true; }
  la_int64_t seek(la_int64_t offset, int whence) override {
    const auto size = static_cast<la_int64_t>(source_.size());
    la_int64_t target = offset;
    if (whence == SEEK_CUR)
      target = static_cast<la_int64_t>(position_) + offset;
    else if (whence == SEEK_END)
      target = size + offset;
    if (target < 0)
      return ARCHIVE_FATAL;
    position_ = static_cast<std::uint64_t>(std::min(target, size));
    return static_cast<la_int64_t>(position_);
  }
  la_int64_t skip(la_int64_t request) override {
    const std::uint64_t left = source_.size() - position_;
    const auto n =
        std::min<std::uint64_t>(left, static_cast<std::uint64_t>(std::max<la_int64_t>(request, 0)));
    position_ += n;
    return static_cast<la_int64_t>(n);
  }
  std::uint64_t container_bytes() const override { return source_.size(); }

 private:
  Source& source_;
  Bytes buffer_;
  std::uint64_t position_ = 0;
};

la_ssize_t read_callback(archive*, void* context, const void** out) {
  auto* input = static_cast<Input*>(context);
  try {
    return input->read(out);
  } catch (...) {
    input->failure = std::current_exception();
    return ARCHIVE_FATAL;
  }
}

la_int64_t seek_callback(archive*, void* context, la_int64_t offset, int whence) {
  auto* input = static_cast<Input*>(context);
  try {
    return input->seek(offset, whence);
  } catch (...) {
    input->failure = std::current_exception();
    return ARCHIVE_FATAL;
  }
}

la_int64_t skip_callback(archive*, void* context, la_int64_t request) {
  auto* input = static_cast<Input*>(context);
  try {
    return input->skip(request);
  } catch (...) {
    input->failure = std::current_exception();
    return 0;
  }
}

std::string join(std::string_view where, std::string_view name) {
  std::string out(where);
  out += '/';
  out += name;
  if (out.size() > kMaxWhere)
    out = "..." + out.substr(out.size() - kMaxWhere);
  return out;
}

std::string_view base_name(std::string_view path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

bool iequals_suffix(std::string_view text, std::string_view suffix) {
  if (text.size() < suffix.size())
    return false;
  return std::equal(suffix.begin(), suffix.end(), text.end() - suffix.size(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) ==
           std::tolower(static_cast<unsigned char>(b));
  });
}

class Level;

// The current member of an outer archive, as the input of a nested walk: every byte read passes
// through the member's content checks and is counted against the outer archive.
class MemberInput : public Input {
 public:
  MemberInput(Level& outer, archive* a, ContentInspector& inspector, std::uint64_t declared)
      : outer_(outer), archive_(a), inspector_(inspector), declared_(declared), buffer_(kBlock) {}
  la_ssize_t read(const void** out) override;
  bool seekable() const override { return false; }
  la_int64_t skip(la_int64_t) override { return 0; }  // libarchive then reads and drops
  std::uint64_t container_bytes() const override { return std::max(declared_, total_); }
  std::uint64_t total() const { return total_; }
  bool ended() const { return ended_; }

 private:
  Level& outer_;
  archive* archive_;
  ContentInspector& inspector_;
  std::uint64_t declared_;  // the member's declared size, 0 if unknown
  Bytes buffer_;
  std::uint64_t total_ = 0;
  bool ended_ = false;
};

// One archive being walked: the file itself, a member in memory, or a streamed member.
class Level {
 public:
  Level(const Limits& limits, WalkBudget& budget, Verdict& verdict, const MemberVisitor& visit,
        std::string where, std::string_view name, std::uint32_t depth)
      : limits_(limits),
        budget_(budget),
        verdict_(verdict),
        visit_(visit),
        where_(std::move(where)),
        name_(name),
        depth_(depth) {}

  // depth_ archive levels are above this one's members. Returns true for a compressed stream
  // whose content no format read (tar takes zeros for an empty archive): walk it again with
  // raw_only, so that its expansion is counted.
  bool walk(Input& input, bool raw_only = false) {
    ArchivePtr a = new_reader(input.seekable(), raw_only);
    archive_read_set_callback_data(a.get(), &input);
    archive_read_set_read_callback(a.get(), read_callback);
    archive_read_set_skip_callback(a.get(), skip_callback);
    if (input.seekable())
      archive_read_set_seek_callback(a.get(), seek_callback);
    input_ = &input;
    const int opened = archive_read_open1(a.get());
    rethrow(input);
    if (opened != ARCHIVE_OK)
      return false;  // not an archive libarchive knows
    bool first = true;
    for (;;) {
      archive_entry* entry = nullptr;
      const int r = archive_read_next_header(a.get(), &entry);
      rethrow(input);
      if (r == ARCHIVE_EOF || r == ARCHIVE_FATAL || r < ARCHIVE_WARN)
        return first && !raw_only && archive_filter_code(a.get(), 0) != ARCHIVE_FILTER_NONE;
      if (r == ARCHIVE_RETRY)
        continue;
      if (first) {
        first = false;
        // A plain file: not compressed and no archive format.
        if (archive_format(a.get()) == ARCHIVE_FORMAT_RAW &&
            archive_filter_code(a.get(), 0) == ARCHIVE_FILTER_NONE) {
          return false;
        }
        if (depth_ > limits_.max_depth) {
          finding(Severity::malicious, "archive.depth",
                  "archives nested more than " + std::to_string(limits_.max_depth) +
                      " deep (a recursive decompression bomb)");
          budget_.stopped = true;
          return false;
        }
        budget_.deepest = std::max(budget_.deepest, depth_);
        raw_ = archive_format(a.get()) == ARCHIVE_FORMAT_RAW;
      }
      member(a.get(), entry);
      rethrow(input);
      if (budget_.stopped)
        return false;
    }
  }

  // Counts decompressed bytes of this archive's members; false once a limit stops the walk.
  bool count(std::uint64_t n) {
    expanded_ += n;
    budget_.expanded += n;
    if (ratio_exceeded(expanded_)) {
      bomb("expands to more than " + std::to_string(limits_.max_ratio) +
           " times its size (a decompression bomb)");
      return false;
    }
    if (budget_.expanded > limits_.max_expanded) {
      verdict_.note("archive contents past " + std::to_string(limits_.max_expanded >> 20) +
                    " MiB were not inspected");
      budget_.stopped = true;
      return false;
    }
    return !budget_.stopped;
  }

 private:
  static void rethrow(Input& input) {
    if (input.failure)
      std::rethrow_exception(std::exchange(input.failure, nullptr));
  }

  bool ratio_exceeded(std::uint64_t expanded) const {
    const std::uint64_t container = std::max<std::uint64_t>(input_->container_bytes(), 1);
    return expanded > limits_.ratio_floor &&
           (container > UINT64_MAX / limits_.max_ratio || expanded / limits_.max_ratio > container);
  }

  void finding(Severity severity, std::string rule, std::string detail) {
    verdict_.add({severity, std::string(kHeuristics), std::move(rule),
                  where_.empty() ? std::string() : where_, std::move(detail)});
  }

  void bomb(const std::string& detail) {
    finding(Severity::malicious, "archive.ratio", detail);
    budget_.stopped = true;
  }

  // Macros are members of an Office document (OOXML, OpenDocument).
  void check_name(std::string_view path) {
    if (iequals_suffix(path, "vbaProject.bin")) {
      finding(Severity::suspicious, "office.vba-macros",
              "an Office document carrying a VBA macro project (" + std::string(path) + ")");
    } else if (path.starts_with("xl/macrosheets/")) {
      finding(Severity::suspicious, "office.xlm-macros",
              "an Excel workbook carrying Excel 4.0 macro sheets");
    } else if (path.starts_with("Basic/") && iequals_suffix(path, ".xml") &&
               !iequals_suffix(path, "script-lc.xml") && !iequals_suffix(path, "script-lb.xml")) {
      finding(Severity::suspicious, "office.odf-macros",
              "an OpenDocument file carrying Basic macros (" + std::string(path) + ")");
    }
  }

  void member(archive* a, archive_entry* entry) {
    if (++budget_.members > limits_.max_members) {
      verdict_.note("archive members past " + std::to_string(limits_.max_members) +
                    " were not inspected");
      budget_.stopped = true;
      return;
    }
    const char* raw_path = archive_entry_pathname_utf8(entry);
    if (!raw_path)
      raw_path = archive_entry_pathname(entry);
    std::string path = raw_path ? raw_path : "?";
    if (raw_) {
      // A single compressed stream: the member is the file without its compression suffix.
      const std::string_view outer = base_name(name_);
      const auto dot = outer.rfind('.');
      path = std::string(dot == std::string_view::npos || dot == 0 ? outer : outer.substr(0, dot));
    }
    check_name(path);
    if (archive_entry_filetype(entry) != AE_IFREG)
      return;
    const std::string where = join(where_.empty() ? base_name(name_) : where_, path);
    if (archive_entry_is_data_encrypted(entry) > 0) {
      verdict_.note("encrypted archive member not inspected: " + where);
      return;
    }
    const bool declared = archive_entry_size_is_set(entry) != 0;
    const std::uint64_t size =
        declared ? static_cast<std::uint64_t>(std::max<la_int64_t>(archive_entry_size(entry), 0))
                 : 0;
    // The sizes headers declare give a bomb away before anything is expanded.
    if (declared && ratio_exceeded(expanded_ + size)) {
      bomb("declares " + std::to_string(expanded_ + size) + " bytes, more than " +
           std::to_string(limits_.max_ratio) + " times its size (a decompression bomb)");
      return;
    }
    if (declared && size <= limits_.max_member_in_memory &&
        budget_.in_memory + size <= limits_.member_memory) {
      in_memory(a, path, where, size);
    } else {
      streamed(a, path, where, size);
    }
  }

  void in_memory(archive* a, const std::string& path, const std::string& where,
                 std::uint64_t size) {
    budget_.in_memory += size;
    struct Release {
      WalkBudget& budget;
      std::uint64_t size;
      ~Release() { budget.in_memory -= size; }
    } release{budget_, size};
    Bytes data;
    data.reserve(static_cast<std::size_t>(size));
    Bytes block(kBlock);
    for (;;) {
      const la_ssize_t n = archive_read_data(a, block.data(), block.size());
      if (n <= 0) {
        if (n < 0)
          verdict_.note("unreadable archive member not fully inspected: " + where);
        break;
      }
      if (data.size() + static_cast<std::size_t>(n) > size) {
        // More than its header declared: a lying header, looked at no further.
        verdict_.note("archive member larger than declared, not fully inspected: " + where);
        count(static_cast<std::uint64_t>(n));
        return;
      }
      data.insert(data.end(), block.begin(), block.begin() + n);
      if (!count(static_cast<std::uint64_t>(n)))
        return;
    }
    MemorySource source(data);
    visit_(Item{source, path, where, depth_});
  }

  void streamed(archive* a, const std::string& path, const std::string& where,
                std::uint64_t declared) {
    ContentInspector inspector(path);
    MemberInput input(*this, a, inspector, declared);
    Level nested(limits_, budget_, verdict_, visit_, where, path, depth_ + 1);
    nested.walk(input);
    // What the nested walk did not read still passes the content checks.
    const void* ignored = nullptr;
    while (!budget_.stopped && !input.ended() && input.read(&ignored) > 0) {
    }
    if (!budget_.stopped)
      inspector.finish(input.total(), where, verdict_);
  }

  const Limits& limits_;
  WalkBudget& budget_;
  Verdict& verdict_;
  const MemberVisitor& visit_;
  std::string where_;
  std::string_view name_;
  std::uint32_t depth_;
  Input* input_ = nullptr;
  std::uint64_t expanded_ = 0;
  bool raw_ = false;
};

la_ssize_t MemberInput::read(const void** out) {
  *out = buffer_.data();
  if (ended_)
    return 0;
  const la_ssize_t n = archive_read_data(archive_, buffer_.data(), buffer_.size());
  if (n <= 0) {
    ended_ = true;
    return n < 0 ? ARCHIVE_FATAL : 0;
  }
  total_ += static_cast<std::uint64_t>(n);
  inspector_.feed(ByteView(buffer_.data(), static_cast<std::size_t>(n)));
  if (!outer_.count(static_cast<std::uint64_t>(n))) {
    ended_ = true;
    return 0;
  }
  return n;
}

}  // namespace

void walk_archive(const Item& item, const Limits& limits, WalkBudget& budget, Verdict& verdict,
                  const MemberVisitor& visit) {
  if (budget.stopped)
    return;
  const auto walk = [&](bool raw_only) {
    SourceInput input(item.source);
    Level level(limits, budget, verdict, visit, std::string(item.where), item.name, item.depth + 1);
    return level.walk(input, raw_only);
  };
  if (walk(false))
    walk(true);
}

}  // namespace splitfs::scan::detail
