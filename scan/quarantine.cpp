// The quarantine folder and the JSON forms of its entries and of verdicts.
#include "scan/quarantine.hpp"

#include "common/fd.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <splitfs/errors.hpp>

namespace splitfs::scan {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

constexpr std::size_t kMaxRecordBytes = 256u << 10;
constexpr std::size_t kMaxEntriesCounted = 100000;

struct DigestDeleter {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string new_id(std::int64_t now_ns) {
  const std::time_t seconds = static_cast<std::time_t>(now_ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::uint8_t random[4];
  if (RAND_bytes(random, sizeof random) != 1)
    throw Error("no randomness for a quarantine id");
  return std::string(stamp) + "-" + to_hex(ByteView(random, sizeof random));
}

// Ids are made here; anything else in the folder is not an entry.
bool valid_id(std::string_view id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == '-';
  });
}

json finding_json(const Finding& f) {
  return {{"severity", to_string(f.severity)},
          {"detector", f.detector},
          {"rule", f.rule},
          {"where", f.where},
          {"detail", f.detail}};
}

Severity parse_severity(const std::string& text) {
  if (text == "malicious")
    return Severity::malicious;
  if (text == "suspicious")
    return Severity::suspicious;
  return Severity::clean;
}

json entry_json(const QuarantineEntry& e) {
  json findings = json::array();
  for (const auto& f : e.findings)
    findings.push_back(finding_json(f));
  return {{"id", e.id},
          {"time_ns", e.time_ns},
          {"origin", e.origin},
          {"file", e.file},
          {"size", e.size},
          {"data", e.data.string()},
          {"sha256", e.sha256},
          {"not_kept", e.not_kept},
          {"severity", to_string(e.severity)},
          {"findings", std::move(findings)}};
}

std::string utf8_safe_dump(const json& j, int indent = -1) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

}  // namespace

Quarantine::Quarantine(fs::path dir, std::uint64_t max_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes) {}

std::uint64_t Quarantine::bytes_held() const {
  std::uint64_t total = 0;
  std::size_t seen = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end && seen < kMaxEntriesCounted;
       it.increment(ec), ++seen) {
    if (it->path().extension() == ".data")
      total += it->file_size(ec);
  }
  return total;
}

QuarantineEntry Quarantine::keep(Source& source, const std::string& origin, const std::string& file,
                                 const Verdict& verdict) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  fs::permissions(dir_, fs::perms::owner_all, fs::perm_options::replace, ec);
  QuarantineEntry entry;
  entry.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  entry.id = new_id(entry.time_ns);
  entry.origin = origin;
  entry.file = file;
  entry.size = source.size();
  entry.severity = verdict.severity;
  entry.findings = verdict.findings;

  const fs::path data = dir_ / (entry.id + ".data");
  const std::uint64_t held = bytes_held();
  if (held + entry.size > max_bytes_) {
    entry.not_kept = "the quarantine holds " + std::to_string(held >> 20) + " MiB, its bound is " +
                     std::to_string(max_bytes_ >> 20) + " MiB (scan.quarantine_max_bytes)";
  } else {
    Fd fd(::open(data.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    std::unique_ptr<EVP_MD_CTX, DigestDeleter> digest(EVP_MD_CTX_new());
    bool ok = fd.get() >= 0 && digest && EVP_DigestInit_ex(digest.get(), EVP_sha256(), nullptr);
    std::string failure = ok ? "" : std::strerror(errno);
    try {
      Bytes buffer(1u << 20);
      for (std::uint64_t offset = 0; ok && offset < entry.size;) {
        const std::size_t n = source.read_at(offset, buffer);
        if (n == 0)
          break;
        ok = write_fully(fd.get(), buffer.data(), n) &&
             EVP_DigestUpdate(digest.get(), buffer.data(), n) == 1;
        if (!ok)
          failure = std::strerror(errno);
        offset += n;
      }
    } catch (const std::exception& e) {
      ok = false;
      failure = e.what();
    }
    std::uint8_t hash[EVP_MAX_MD_SIZE];
    unsigned int hash_length = 0;
    ok = ok && EVP_DigestFinal_ex(digest.get(), hash, &hash_length) == 1 &&
         ::fchmod(fd.get(), 0400) == 0 && ::fsync(fd.get()) == 0;
    ok = ::close(fd.release()) == 0 && ok;
    if (ok) {
      entry.data = data;
      entry.sha256 = to_hex(ByteView(hash, hash_length));
    } else {
      ::unlink(data.c_str());
      entry.not_kept = "cannot write " + data.string() + ": " + failure;
    }
  }

  const std::string record = utf8_safe_dump(entry_json(entry), 2) + "\n";
  const fs::path path = dir_ / (entry.id + ".json");
  const fs::path tmp = dir_ / (entry.id + ".json.tmp");
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    const bool ok = fd.get() >= 0 &&
                    write_fully(fd.get(), reinterpret_cast<const std::uint8_t*>(record.data()),
                                record.size()) &&
                    ::fsync(fd.get()) == 0;
    if (!ok || ::close(fd.release()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
      ::unlink(tmp.c_str());
      throw LocalIoError("cannot write the quarantine record " + path.string() + ": " +
                         std::strerror(errno));
    }
  }
  return entry;
}

std::vector<QuarantineEntry> Quarantine::list(std::size_t max) const {
  std::vector<QuarantineEntry> out;
  std::error_code ec;
  std::size_t seen = 0;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end && seen < kMaxEntriesCounted;
       it.increment(ec), ++seen) {
    const fs::path& p = it->path();
    const std::string id = p.stem().string();
    if (p.extension() != ".json" || !valid_id(id) || it->file_size(ec) > kMaxRecordBytes)
      continue;
    std::ifstream in(p);
    const json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      continue;
    try {
      QuarantineEntry e;
      e.id = id;
      e.time_ns = j.value("time_ns", std::int64_t{0});
      e.origin = j.value("origin", "");
      e.file = j.value("file", "");
      e.size = j.value("size", std::uint64_t{0});
      e.sha256 = j.value("sha256", "");
      e.not_kept = j.value("not_kept", "");
      e.severity = parse_severity(j.value("severity", ""));
      // The bytes' place follows from the id, never from the record's text.
      if (!j.value("data", "").empty() && fs::exists(dir_ / (id + ".data"), ec))
        e.data = dir_ / (id + ".data");
      for (const auto& f : j.value("findings", json::array())) {
        e.findings.push_back({parse_severity(f.value("severity", "")), f.value("detector", ""),
                              f.value("rule", ""), f.value("where", ""), f.value("detail", "")});
      }
      out.push_back(std::move(e));
    } catch (const json::exception&) {
      continue;
    }
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.time_ns > b.time_ns; });
  if (out.size() > max)
    out.resize(max);
  return out;
}

std::string to_json(const std::vector<QuarantineEntry>& entries) {
  json out = json::array();
  for (const auto& e : entries)
    out.push_back(entry_json(e));
  return utf8_safe_dump(out, 2);
}

std::string to_json(const std::string& file, const Verdict& verdict, Action action) {
  json findings = json::array();
  for (const auto& f : verdict.findings)
    findings.push_back(finding_json(f));
  return utf8_safe_dump(json{{"file", file},
                             {"verdict", to_string(verdict.severity)},
                             {"action", to_string(action)},
                             {"findings", std::move(findings)},
                             {"notes", verdict.notes},
                             {"bytes", verdict.stats.bytes},
                             {"bytes_expanded", verdict.stats.bytes_expanded},
                             {"archive_members", verdict.stats.members}});
}

}  // namespace splitfs::scan
