// The built-in heuristics on a file's bytes: the EICAR test file, executables and scripts behind a
// document or media name, macros in legacy Office files.
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>
#include <functional>
#include <memory>
#include <set>
#include <splitfs/errors.hpp>

#include "scan/detectors.hpp"

namespace splitfs::scan::detail {

namespace {

// SHA-256 of the 68-byte EICAR test string: the repository never holds the string itself.
constexpr std::string_view kEicarSha256 =
    "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
constexpr std::size_t kEicarBytes = 68;
// The file may carry trailing whitespace up to this size (the EICAR definition).
constexpr std::size_t kEicarMaxBytes = 128;

constexpr std::array<std::uint8_t, 8> kOleMagic{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1};
// "_VBA_PROJECT" in UTF-16LE: the directory entry of a VBA project in an OLE2 file.
constexpr std::array<std::uint8_t, 24> kVbaProject{'_', 0, 'V', 0, 'B', 0, 'A', 0, '_', 0, 'P', 0,
                                                   'R', 0, 'O', 0, 'J', 0, 'E', 0, 'C', 0, 'T', 0};

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string extension_of(std::string_view name) {
  const auto slash = name.find_last_of('/');
  const std::string_view base = slash == std::string_view::npos ? name : name.substr(slash + 1);
  const auto dot = base.rfind('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == base.size())
    return {};
  return lower(base.substr(dot + 1));
}

bool contains(ByteView haystack, ByteView needle) {
  if (haystack.size() < needle.size())
    return false;
  return std::search(haystack.begin(), haystack.end(),
                     std::boyer_moore_horspool_searcher(needle.begin(), needle.end())) !=
         haystack.end();
}

std::uint32_t le32(const Bytes& b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) | static_cast<std::uint32_t>(b[at + 1]) << 8 |
         static_cast<std::uint32_t>(b[at + 2]) << 16 | static_cast<std::uint32_t>(b[at + 3]) << 24;
}

std::uint32_t be32(const Bytes& b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) << 24 | static_cast<std::uint32_t>(b[at + 1]) << 16 |
         static_cast<std::uint32_t>(b[at + 2]) << 8 | static_cast<std::uint32_t>(b[at + 3]);
}

// The kind of executable code the first bytes start, if any: "elf", "pe", "mach-o", "script".
std::string_view executable_kind(const Bytes& head) {
  if (head.size() >= 7 && head[0] == 0x7F && head[1] == 'E' && head[2] == 'L' && head[3] == 'F' &&
      (head[4] == 1 || head[4] == 2) && (head[5] == 1 || head[5] == 2) && head[6] == 1) {
    return "elf";
  }
  if (head.size() >= 0x40 && head[0] == 'M' && head[1] == 'Z') {
    const std::uint32_t pe = le32(head, 0x3C);
    if (pe >= 0x40 && pe <= head.size() - 4 && std::memcmp(head.data() + pe, "PE\0\0", 4) == 0)
      return "pe";
  }
  if (head.size() >= 8) {
    const std::uint32_t magic = be32(head, 0);
    if (magic == 0xFEEDFACE || magic == 0xFEEDFACF || magic == 0xCEFAEDFE || magic == 0xCFFAEDFE)
      return "mach-o";
    // A universal binary; Java class files share the magic but carry a version >= 45 there.
    const std::uint32_t architectures = be32(head, 4);
    if (magic == 0xCAFEBABE && architectures >= 1 && architectures <= 20)
      return "mach-o";
  }
  if (head.size() >= 3 && head[0] == '#' && head[1] == '!' &&
      (head[2] == '/' || (head[2] == ' ' && head.size() >= 4 && head[3] == '/'))) {
    return "script";
  }
  return {};
}

std::string_view describe(std::string_view kind) {
  if (kind == "elf")
    return "an ELF executable";
  if (kind == "pe")
    return "a Windows (PE) executable";
  if (kind == "mach-o")
    return "a Mach-O executable";
  return "a script with an interpreter line (#!)";
}

class Heuristics : public Detector {
 public:
  std::string_view name() const override { return kHeuristics; }
  std::string unavailable() override { return {}; }
  bool wants_members() const override { return true; }
  bool reads_through(std::uint64_t) const override { return false; }  // the head; an OLE file

  void scan(const Item& item, Verdict& verdict) override {
    ContentInspector inspector(item.name);
    Bytes buffer(64u << 10);
    const std::uint64_t size = item.source.size();
    for (std::uint64_t offset = 0; offset < size && inspector.wants_more();) {
      const std::size_t n = item.source.read_at(offset, buffer);
      if (n == 0)
        break;
      inspector.feed(ByteView(buffer.data(), n));
      offset += n;
    }
    inspector.finish(size, item.where, verdict);
  }
};

}  // namespace

NameKind name_kind(std::string_view name) {
  static const std::set<std::string, std::less<>> text{"txt", "text", "md",  "csv",
                                                       "tsv", "log",  "rtf", "svg"};
  static const std::set<std::string, std::less<>> documents{
      // documents
      "pdf", "doc", "docx", "docm", "dot", "dotx", "dotm", "xls", "xlsx", "xlsm", "xlsb", "xlt",
      "xltx", "xltm", "ppt", "pptx", "pptm", "pps", "ppsx", "ppsm", "odt", "ods", "odp", "odg",
      "epub", "djvu", "xps",
      // images
      "jpg", "jpeg", "jpe", "png", "gif", "bmp", "tif", "tiff", "webp", "heic", "heif", "ico",
      "psd", "cr2", "nef", "dng",
      // audio and video
      "mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "aac", "wma", "aiff", "mp4", "m4v", "mov",
      "avi", "mkv", "webm", "wmv", "flv", "mpg", "mpeg", "3gp"};
  const std::string ext = extension_of(name);
  if (text.contains(ext))
    return NameKind::text_document;
  if (documents.contains(ext))
    return NameKind::document;
  return NameKind::other;
}

ContentInspector::ContentInspector(std::string_view name)
    : kind_(name_kind(name)), extension_(extension_of(name)) {}

void ContentInspector::feed(ByteView bytes) {
  const std::uint64_t before = fed_;
  fed_ += bytes.size();
  const bool was_ole = ole_;
  if (head_.size() < kHeadBytes) {
    const std::size_t take = std::min(bytes.size(), kHeadBytes - head_.size());
    head_.insert(head_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(take));
    ole_ = head_.size() >= kOleMagic.size() &&
           std::equal(kOleMagic.begin(), kOleMagic.end(), head_.begin());
  }
  if (!ole_ || ole_macros_)
    return;
  if (!was_ole)  // the bytes of earlier pieces are all in the head
    search_ole(ByteView(head_.data(), static_cast<std::size_t>(before)));
  search_ole(bytes);
}

void ContentInspector::search_ole(ByteView bytes) {
  if (ole_macros_ || bytes.empty())
    return;
  const std::size_t keep = kVbaProject.size() - 1;
  Bytes joint(carry_);
  joint.insert(joint.end(), bytes.begin(),
               bytes.begin() + static_cast<std::ptrdiff_t>(std::min(bytes.size(), keep)));
  if (contains(joint, kVbaProject) || contains(bytes, kVbaProject)) {
    ole_macros_ = true;
    return;
  }
  if (bytes.size() >= keep) {
    carry_.assign(bytes.end() - static_cast<std::ptrdiff_t>(keep), bytes.end());
  } else {
    carry_.insert(carry_.end(), bytes.begin(), bytes.end());
    if (carry_.size() > keep)
      carry_.erase(carry_.begin(), carry_.end() - static_cast<std::ptrdiff_t>(keep));
  }
}

bool ContentInspector::wants_more() const {
  return head_.size() < kHeadBytes || (ole_ && !ole_macros_);
}

void ContentInspector::finish(std::uint64_t total, std::string_view where, Verdict& verdict) {
  const std::string place(where);
  if (total >= kEicarBytes && total <= kEicarMaxBytes && head_.size() == total) {
    std::size_t length = head_.size();
    while (length > kEicarBytes && std::strchr(" \t\r\n\x1a", head_[length - 1]) != nullptr &&
           head_[length - 1] != 0)
      --length;
    if (length == kEicarBytes && sha256_hex(ByteView(head_.data(), length)) == kEicarSha256) {
      verdict.add({Severity::malicious, std::string(kHeuristics), "eicar", place,
                   "the EICAR anti-virus test file"});
    }
  }
  if (kind_ != NameKind::other) {
    const std::string_view kind = executable_kind(head_);
    // Scripts are normal content for plain-text names; binaries never are.
    if (!kind.empty() && (kind != "script" || kind_ == NameKind::document)) {
      verdict.add({Severity::malicious, std::string(kHeuristics), "masquerade." + std::string(kind),
                   place,
                   std::string(describe(kind)) + " named like a document or media file (." +
                       extension_ + ")"});
    }
  }
  if (ole_macros_) {
    verdict.add({Severity::suspicious, std::string(kHeuristics), "office.ole-macros", place,
                 "a legacy Office (OLE2) file carrying a VBA macro project"});
  }
}

std::string sha256_hex(ByteView bytes) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1)
    throw Error("SHA-256 failed");
  return to_hex(ByteView(digest.data(), length));
}

std::unique_ptr<Detector> make_heuristics() {
  return std::make_unique<Heuristics>();
}

}  // namespace splitfs::scan::detail
