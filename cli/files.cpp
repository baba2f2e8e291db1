#include "cli/files.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <sstream>

#include "cli/errors.hpp"
#include "cli/progress.hpp"
#include "cli/suggest.hpp"
#include "core/scan_gate.hpp"
#include "fs/remote.hpp"

namespace splitfs::cli {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

namespace {

// Files written through a mount live in its tree, not under their path: these find them there
// when no plainly stored file has the name.

std::optional<splitfs::fs::RemoteTree> mount_tree(splitfs::Client& client) {
  return splitfs::fs::load_tree(client);
}

// gate: the malware check (nullptr with --no-scan).
bool fetch_from_mount(splitfs::Client& client, const std::string& name, const std::string& dest,
                      fs::path& written, splitfs::core::ScanGate* gate) {
  const auto tree = mount_tree(client);
  if (!tree)
    return false;
  const auto ino = splitfs::fs::resolve_path(tree->tree, name);
  if (!ino)
    return false;
  if (!gate) {
    written = splitfs::fs::fetch_file(client, tree->tree, *ino, name, dest);
    return true;
  }
  // Into a private folder beside the destination first: the file appears under its name only
  // once the malware check lets it through.
  const fs::path target =
      fs::is_directory(dest) ? fs::path(dest) / fs::path(name).filename() : fs::path(dest);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string staging = (dir / ".splitfs-scan-XXXXXX").string();
  if (::mkdtemp(staging.data()) == nullptr)
    throw splitfs::LocalIoError("cannot create a folder in " + dir.string());
  struct Cleanup {
    fs::path path;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } cleanup{staging};
  const fs::path staged =
      splitfs::fs::fetch_file(client, tree->tree, *ino, name, cleanup.path / target.filename());
  {
    const int fd = ::open(staged.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      throw splitfs::LocalIoError("cannot read " + staged.string());
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    gate->check_fetch(fd, name, target);
  }
  if (::rename(staged.c_str(), target.c_str()) != 0)
    throw splitfs::LocalIoError("cannot write " + target.string());
  written = target;
  return true;
}

bool stat_from_mount(splitfs::Client& client, const std::string& name, splitfs::FileStat& out) {
  const auto tree = mount_tree(client);
  if (!tree)
    return false;
  const auto ino = splitfs::fs::resolve_path(tree->tree, name);
  if (!ino)
    return false;
  const auto& rec = tree->tree.inodes.at(*ino);
  if (!S_ISREG(rec.mode))
    throw splitfs::Error("'" + name + "' is not a regular file in the mount");
  if (rec.content_version == 0) {
    out.entry = {name, 0, 0, rec.mtime_ns, 0};
    out.mode = rec.mode & 07777;
    out.mtime_ns = rec.mtime_ns;
    return true;
  }
  out = client.stat_object(splitfs::fs::content_key(*ino));
  out.entry.name = name;
  out.entry.stored_at_ns = rec.mtime_ns;
  return true;
}

// Every name `ls` shows: stored files and files written through a mount (by their path in it).
// Empty when they cannot be listed: they only feed suggestions.
std::vector<std::string> known_names(splitfs::Client& client) {
  std::vector<std::string> names;
  try {
    for (const auto& e : client.list())
      names.push_back(e.name);
    if (const auto tree = mount_tree(client)) {
      for (const auto& p : splitfs::fs::list_paths(tree->tree)) {
        if (S_ISREG(p.record->mode))
          names.push_back(p.path);
      }
    }
  } catch (const splitfs::Error&) {
    names.clear();
  }
  return names;
}

// The stored names under folder `prefix` ("a/b" holds "a/b/c" and "a/b/d/e").
std::vector<std::string> names_under(const std::vector<std::string>& names, std::string prefix) {
  while (prefix.size() > 1 && prefix.back() == '/')
    prefix.pop_back();
  prefix += '/';
  std::vector<std::string> out;
  for (const auto& name : names) {
    if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0)
      out.push_back(name);
  }
  return out;
}

// A command's items, one after the other: a failure is reported and the rest go on, except for
// failures that would only repeat for every item (a server unavailable, this client refused, a
// broken configuration), which stop the command. The exit code is the first failure's.
class Batch {
 public:
  // client: for suggestions when a name is not found (may be null). recursive_hint: the command
  // takes -r, so a name that is a folder gets that advice.
  Batch(splitfs::Client* client, std::string command, bool recursive_hint)
      : client_(client), command_(std::move(command)), recursive_hint_(recursive_hint) {}

  // Runs work for one item; false if it failed. name: the stored name the item asks for, for
  // "did you mean" when it does not exist.
  bool run(const std::string& what, const std::string& name, const std::function<void()>& work) {
    if (stopped_) {
      ++skipped_;
      return false;
    }
    try {
      work();
      return true;
    } catch (const splitfs::NotFound& e) {
      if (before_report_)
        before_report_();
      last_code_ = not_found(e, name);
      fail(last_code_);
    } catch (const std::exception& e) {
      if (before_report_)
        before_report_();
      last_message_ = explain(e);
      last_code_ = report_error(what.empty() ? "" : what + ": ", e);
      fail(last_code_);
      stopped_ = last_code_ == kUnavailable || last_code_ == kAuth || last_code_ == kConfig;
    }
    return false;
  }
  // Called before a failure is reported (to take a progress line off the terminal first).
  void before_report(std::function<void()> hook) { before_report_ = std::move(hook); }
  void fail(int code) {
    if (code_ == kOk)
      code_ = code;
  }
  // Whether the command has stopped; counts the item as not attempted if so.
  bool skip() {
    skipped_ += stopped_ ? 1 : 0;
    return stopped_;
  }
  // The last failure's message and exit code, for --json.
  const std::string& last_message() const { return last_message_; }
  int last_code() const { return last_code_; }
  int finish() {
    if (skipped_ > 0) {
      std::cerr << "splitfs: " << skipped_ << " more item(s) not attempted: they would fail the "
                << "same way\n";
    }
    return code_;
  }
  // The names ls shows, listed once.
  const std::vector<std::string>& names() {
    if (!names_ && client_)
      names_ = known_names(*client_);
    return names_ ? *names_ : empty_;
  }

 private:
  int not_found(const splitfs::NotFound& e, const std::string& name) {
    if (name.empty() || !client_) {
      last_message_ = e.what();
      std::cerr << "splitfs: " << last_message_ << "\n";
      return kNotFound;
    }
    const auto under = names_under(names(), name);
    if (!under.empty()) {
      last_message_ = "'" + name + "' is a folder of " + std::to_string(under.size()) +
                      " stored file(s)" +
                      (recursive_hint_ ? ": use `splitfs " + command_ + " -r " + name + "`"
                                       : ": name its files, e.g. '" + under.front() + "'");
      std::cerr << "splitfs: " << last_message_ << "\n";
      return recursive_hint_ ? kUsage : kNotFound;
    }
    const std::string hint = splitfs::cli::did_you_mean(splitfs::cli::suggestions(name, names()));
    last_message_ =
        e.what() + (hint.empty() ? std::string(" (`splitfs ls` lists the stored files)") : hint);
    std::cerr << "splitfs: " << last_message_ << "\n";
    return kNotFound;
  }

  splitfs::Client* client_;
  std::string command_;
  bool recursive_hint_;
  bool stopped_ = false;
  std::size_t skipped_ = 0;
  int code_ = kOk;
  std::string last_message_;
  int last_code_ = kOk;
  std::function<void()> before_report_;
  std::optional<std::vector<std::string>> names_;
  std::vector<std::string> empty_;
};

// ---- store ----

struct StoreItem {
  fs::path path;
  std::string name;
};

// The name a folder's files are stored under: its own name ("photos" for ~/photos/, for ".").
std::string folder_name(const fs::path& folder) {
  fs::path p = fs::absolute(folder).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path())
    p = p.parent_path();
  return p.filename().string();
}

// What `splitfs store` will store, in order; a usage error (exit 2) before anything is stored.
int plan_store(const std::vector<std::string>& args, bool recursive, const std::string& as_name,
               std::vector<StoreItem>& items, Batch& batch) {
  if (!as_name.empty() && args.size() != 1)
    return report("--as takes a single file or folder", kUsage);
  for (const auto& arg : args) {
    std::error_code ec;
    const fs::file_status status = fs::status(arg, ec);
    if (fs::is_regular_file(status)) {
      items.push_back({arg, as_name.empty() ? fs::path(arg).filename().string() : as_name});
      continue;
    }
    if (!fs::is_directory(status))
      return report(arg + " is not a file or a folder", kUsage);
    const std::string base = as_name.empty() ? folder_name(arg) : as_name;
    if (base.empty())
      return report("give the files of " + arg + " a folder name to be stored under: --as NAME",
                    kUsage);
    if (!recursive) {
      return report(arg + " is a folder: store it and everything in it with -r (as " + base +
                        "/...), e.g. `splitfs store -r " + arg + "`",
                    kUsage);
    }
    std::vector<StoreItem> found;
    batch.run(arg, "", [&] {
      fs::recursive_directory_iterator it(arg, ec);
      for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const fs::file_status own = it->symlink_status(ec);
        if (ec)
          break;
        if (fs::is_directory(own))
          continue;
        if (!fs::is_regular_file(own)) {
          std::cerr << "splitfs: skipped " << it->path().string()
                    << " (not a regular file: symlinks and devices are not stored)\n";
          continue;
        }
        found.push_back(
            {it->path(), base + "/" + it->path().lexically_relative(arg).generic_string()});
      }
      if (ec)
        throw splitfs::LocalIoError("cannot read the folder " + arg + ": " + ec.message());
    });
    std::sort(found.begin(), found.end(),
              [](const StoreItem& a, const StoreItem& b) { return a.name < b.name; });
    if (found.empty() && !ec)
      std::cerr << "splitfs: " << arg << " holds no files: nothing to store\n";
    items.insert(items.end(), found.begin(), found.end());
  }
  return kOk;
}

// ---- fetch and verify ----

struct FetchItem {
  std::string name;
  fs::path target;  // empty: the destination given (-o) as it is
};

// "a/b/c" under the folder "a" becomes the local path "a/b/c"; a name with an empty, "." or ".."
// component is not made into a path (nothing outside the destination is ever written).
std::optional<fs::path> local_path(const std::string& relative) {
  fs::path out;
  std::size_t start = 0;
  while (start <= relative.size()) {
    const std::size_t end = std::min(relative.find('/', start), relative.size());
    const std::string part = relative.substr(start, end - start);
    if (part.empty() || part == "." || part == "..")
      return std::nullopt;
    out /= part;
    start = end + 1;
  }
  return out;
}

// The stored files that `args` name with -r: each name itself and every file under it as a
// folder, placed below dest the way `cp -r` places a folder (its last component kept).
std::vector<FetchItem> expand_recursive(splitfs::Client& client,
                                        const std::vector<std::string>& args, const fs::path& dest,
                                        Batch& batch) {
  std::vector<std::string> stored;
  // Files written through a mount are fetched by their name only: -r reads the stored files.
  if (!batch.run("", "", [&] {
        for (const auto& e : client.list())
          stored.push_back(e.name);
      })) {
    return {};
  }
  std::vector<FetchItem> items;
  for (std::string arg : args) {
    while (arg.size() > 1 && arg.back() == '/')
      arg.pop_back();
    const std::size_t slash = arg.rfind('/');
    const std::size_t keep_from = slash == std::string::npos ? 0 : slash + 1;
    std::vector<std::string> matched;
    if (std::find(stored.begin(), stored.end(), arg) != stored.end())
      matched.push_back(arg);
    for (const auto& name : names_under(stored, arg))
      matched.push_back(name);
    if (matched.empty()) {
      batch.run(arg, arg,
                [&] { throw splitfs::NotFound("no stored file or folder named '" + arg + "'"); });
      continue;
    }
    for (const auto& name : matched) {
      const auto relative = local_path(name.substr(keep_from));
      if (!relative) {
        batch.run(name, "", [&] {
          throw splitfs::Error("'" + name +
                               "' is not fetched: an empty, '.' or '..' component cannot be made "
                               "into a path under " +
                               dest.string());
        });
        continue;
      }
      items.push_back({name, dest / *relative});
    }
  }
  return items;
}

// Lowercase hex SHA-256 of what is fed to it.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw splitfs::Error("cannot start a SHA-256 hash");
  }
  void update(std::span<const std::uint8_t> bytes) {
    if (EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1)
      throw splitfs::Error("cannot hash");
  }
  std::string hex() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest.data(), &length) != 1)
      throw splitfs::Error("cannot hash");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < length; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 15]);
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

// verify for a file written through a mount: its content object read back segment by segment,
// each verified by the library as it is read, and hashed. False if name is not in the mount.
bool verify_from_mount(splitfs::Client& client, const std::string& name,
                       const splitfs::ProgressHandler& progress, splitfs::VerifyResult& out) {
  const auto tree = mount_tree(client);
  if (!tree)
    return false;
  const auto ino = splitfs::fs::resolve_path(tree->tree, name);
  if (!ino)
    return false;
  const auto& rec = tree->tree.inodes.at(*ino);
  if (!S_ISREG(rec.mode))
    throw splitfs::Error("'" + name + "' is not a regular file in the mount");
  out.entry = {name, rec.size, rec.content_version, rec.mtime_ns, (rec.size + 1023) / 1024};
  Sha256 hash;
  std::uint64_t done = 0;
  if (rec.content_version > 0) {
    const auto object = client.open_object(splitfs::fs::content_key(*ino), rec.content_version);
    out.segments = object.segments.size();
    // In batches, so memory stays flat for large files.
    constexpr std::size_t kBatch = 32;
    for (std::size_t first = 0; first < object.segments.size(); first += kBatch) {
      const std::size_t count = std::min(kBatch, object.segments.size() - first);
      for (const auto& segment : client.read_segments(
               std::span<const splitfs::SegmentRef>(object.segments).subspan(first, count))) {
        hash.update(segment);
        done += segment.size();
      }
      if (progress)
        progress({name, done, rec.size, 0});
    }
  }
  if (done != rec.size) {
    throw splitfs::IntegrityError("'" + name + "' in the mount rebuilt to " + std::to_string(done) +
                                  " bytes, not " + std::to_string(rec.size));
  }
  out.sha256 = hash.hex();
  return true;
}

// ---- listings ----

struct Listed {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t chunks = 0;
  std::uint64_t version = 0;
  std::int64_t stored_at_ns = 0;
  bool mount = false;  // written through a mount
};

}  // namespace

int store_files(splitfs::Client& client, const std::vector<std::string>& args, bool recursive,
                const std::string& as_name, bool no_scan, bool quiet) {
  Batch batch(&client, "store", true);
  std::vector<StoreItem> items;
  if (const int code = plan_store(args, recursive, as_name, items, batch); code != kOk)
    return code;
  splitfs::cli::Progress progress(!quiet && splitfs::cli::Progress::on_terminal(), items.size());
  batch.before_report([&progress] { progress.clear(); });
  client.on_scan_warning([&progress](const splitfs::ScanWarning& warning) {
    progress.clear();
    splitfs::core::print_scan_warning(warning);
  });
  for (const auto& item : items) {
    if (batch.skip())
      continue;
    if (no_scan) {
      std::cerr << "splitfs: warning: --no-scan: " << item.path.string()
                << " is stored without a malware check\n";
    }
    std::error_code ec;
    const std::uint64_t size = fs::file_size(item.path, ec);
    const auto handler = progress.begin(item.name, ec ? 0 : size);
    const bool ok =
        batch.run(item.path.string(), "", [&] { client.store(item.path, item.name, handler); });
    progress.end(ok);
    if (ok && !quiet)
      std::cout << "stored " << item.path.string() << " as " << item.name << std::endl;
  }
  client.on_scan_warning(nullptr);
  progress.finish();
  return batch.finish();
}

int fetch_files(splitfs::Client& client, const fs::path& home,
                const std::vector<std::string>& names, bool recursive, const std::string& dest,
                bool no_scan, bool quiet) {
  Batch batch(&client, "fetch", true);
  std::vector<FetchItem> items;
  if (recursive) {
    std::error_code ec;
    fs::create_directories(dest, ec);
    if (!fs::is_directory(dest))
      return report("cannot create the folder " + dest + (ec ? ": " + ec.message() : ""), kFailure);
    items = expand_recursive(client, names, dest, batch);
  } else {
    if (names.size() > 1 && !fs::is_directory(dest))
      return report("fetching several names needs -o to name an existing folder", kUsage);
    for (const auto& name : names)
      items.push_back({name, {}});
  }
  std::optional<splitfs::core::ScanGate> gate;
  if (!no_scan && !items.empty())
    gate.emplace(splitfs::core::load_scan_config(home));
  splitfs::cli::Progress progress(!quiet && splitfs::cli::Progress::on_terminal(), items.size());
  batch.before_report([&progress] { progress.clear(); });
  client.on_scan_warning([&progress](const splitfs::ScanWarning& warning) {
    progress.clear();
    splitfs::core::print_scan_warning(warning);
  });
  for (const auto& item : items) {
    if (batch.skip())
      continue;
    if (no_scan) {
      std::cerr << "splitfs: warning: --no-scan: " << item.name
                << " is fetched without a malware check\n";
    }
    const auto handler = progress.begin(item.name);
    fs::path written;
    const bool ok = batch.run(item.name, item.name, [&] {
      if (!item.target.empty()) {
        if (fs::is_directory(item.target)) {
          throw splitfs::LocalIoError(item.target.string() + " is a folder: '" + item.name +
                                      "' is not fetched over it");
        }
        fs::create_directories(item.target.parent_path());
        written = client.fetch(item.name, item.target, handler);
        return;
      }
      try {
        written = client.fetch(item.name, dest, handler);
      } catch (const splitfs::NotFound&) {
        if (!fetch_from_mount(client, item.name, dest, written, gate ? &*gate : nullptr))
          throw;
      }
    });
    progress.end(ok);
    if (ok && !quiet)
      std::cout << "fetched " << item.name << " to " << written.string() << std::endl;
  }
  client.on_scan_warning(nullptr);
  progress.finish();
  return batch.finish();
}

int verify_files(splitfs::Client& client, const std::vector<std::string>& names, bool recursive,
                 bool json, bool quiet) {
  Batch batch(&client, "verify", true);
  std::vector<FetchItem> items;
  if (recursive) {
    items = expand_recursive(client, names, fs::path(), batch);
  } else {
    for (const auto& name : names)
      items.push_back({name, {}});
  }
  splitfs::cli::Progress progress(!quiet && !json && splitfs::cli::Progress::on_terminal(),
                                  items.size());
  batch.before_report([&progress] { progress.clear(); });
  Json results = Json::array();
  for (const auto& item : items) {
    if (batch.skip()) {
      if (json)
        results.push_back({{"name", item.name}, {"ok", false}, {"error", "not attempted"}});
      continue;
    }
    const auto handler = progress.begin(item.name);
    splitfs::VerifyResult result;
    const bool ok = batch.run(item.name, item.name, [&] {
      try {
        result = client.verify(item.name, handler);
      } catch (const splitfs::NotFound&) {
        if (!verify_from_mount(client, item.name, handler, result))
          throw;
      }
    });
    progress.end(ok);
    if (json) {
      Json one{{"name", item.name}, {"ok", ok}};
      if (ok) {
        one["size"] = result.entry.size;
        one["chunks"] = result.entry.chunks;
        one["segments"] = result.segments;
        one["version"] = result.entry.version;
        one["sha256"] = result.sha256;
      } else {
        one["exit_code"] = batch.last_code();
        one["error"] = batch.last_message();
      }
      results.push_back(std::move(one));
    } else if (ok && !quiet) {
      std::cout << "verified " << item.name << ": " << human_size(result.entry.size) << " ("
                << result.entry.size << " bytes), version " << result.entry.version << ", "
                << result.segments << " segment(s), sha256 " << result.sha256 << std::endl;
    }
  }
  progress.finish();
  if (json)
    std::cout << results.dump(2) << "\n";
  return batch.finish();
}

int list_files(splitfs::Client& client, const std::string& prefix, bool long_form,
               const std::string& sort, bool reverse, bool json) {
  std::vector<Listed> files;
  for (const auto& e : client.list())
    files.push_back({e.name, e.size, e.chunks, e.version, e.stored_at_ns, false});
  if (const auto tree = mount_tree(client)) {
    for (const auto& p : splitfs::fs::list_paths(tree->tree)) {
      if (!S_ISREG(p.record->mode))
        continue;
      files.push_back({p.path, p.record->size, (p.record->size + 1023) / 1024,
                       p.record->content_version, p.record->mtime_ns, true});
    }
  }
  std::erase_if(files, [&](const Listed& f) { return !f.name.starts_with(prefix); });
  // Names ascending; sizes and times largest and newest first, as ls -S and ls -t.
  std::stable_sort(files.begin(), files.end(), [&](const Listed& a, const Listed& b) {
    if (sort == "size" && a.size != b.size)
      return a.size > b.size;
    if (sort == "time" && a.stored_at_ns != b.stored_at_ns)
      return a.stored_at_ns > b.stored_at_ns;
    return a.name < b.name;
  });
  if (reverse)
    std::reverse(files.begin(), files.end());
  if (json) {
    Json out = Json::array();
    for (const auto& f : files) {
      out.push_back({{"name", f.name},
                     {"size", f.size},
                     {"chunks", f.chunks},
                     {"version", f.version},
                     {"stored_at", iso_time(f.stored_at_ns)},
                     {"stored_at_ns", f.stored_at_ns},
                     {"source", f.mount ? "mount" : "store"}});
    }
    std::cout << out.dump(2) << "\n";
    return kOk;
  }
  if (!long_form) {
    for (const auto& f : files) {
      std::printf("%12llu  %8llu chunks  %s  %s\n", static_cast<unsigned long long>(f.size),
                  static_cast<unsigned long long>(f.chunks), local_time(f.stored_at_ns).c_str(),
                  f.name.c_str());
    }
    return kOk;
  }
  std::uint64_t total = 0;
  std::printf("%-10s %14s %9s %7s  %-19s  %-5s  %s\n", "size", "bytes", "chunks", "version",
              "stored at", "via", "name");
  for (const auto& f : files) {
    std::printf("%-10s %14llu %9llu %7llu  %-19s  %-5s  %s\n", human_size(f.size).c_str(),
                static_cast<unsigned long long>(f.size), static_cast<unsigned long long>(f.chunks),
                static_cast<unsigned long long>(f.version), local_time(f.stored_at_ns).c_str(),
                f.mount ? "mount" : "store", f.name.c_str());
    total += f.size;
  }
  std::printf("%zu file(s), %s\n", files.size(), human_size(total).c_str());
  return kOk;
}

int stat_file(splitfs::Client& client, const std::string& name, bool json) {
  Batch batch(&client, "stat", false);
  splitfs::FileStat s;
  batch.run("", name, [&] {
    try {
      s = client.stat(name);
    } catch (const splitfs::NotFound&) {
      if (!stat_from_mount(client, name, s))
        throw;
    }
  });
  if (const int code = batch.finish(); code != kOk)
    return code;
  if (json) {
    Json servers = Json::array();
    for (const auto& p : s.servers) {
      servers.push_back({{"server", p.server},
                         {"address", p.address},
                         {"version", p.version},
                         {"shares", p.shares},
                         {"chunks", p.chunks},
                         {"stored_bytes", p.stored_bytes}});
    }
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", s.mode & 07777);
    const Json out{{"name", s.entry.name},
                   {"size", s.entry.size},
                   {"chunks", s.entry.chunks},
                   {"version", s.entry.version},
                   {"stored_at", iso_time(s.entry.stored_at_ns)},
                   {"stored_at_ns", s.entry.stored_at_ns},
                   {"mode", mode},
                   {"mtime_ns", s.mtime_ns},
                   {"segment_bytes", s.segment_bytes},
                   {"servers", servers}};
    std::cout << out.dump(2) << "\n";
    return kOk;
  }
  std::cout << "name:      " << s.entry.name << "\n"
            << "size:      " << s.entry.size << " bytes (" << human_size(s.entry.size) << ")\n"
            << "chunks:    " << s.entry.chunks << " of 1024 bytes\n"
            << "version:   " << s.entry.version << "\n"
            << "stored at: " << local_time(s.entry.stored_at_ns) << "\n";
  for (const auto& p : s.servers) {
    std::cout << p.server << (p.server.size() < 5 ? "  " : " ") << p.address << ": " << p.chunks
              << " chunks in " << p.shares << " shares, " << p.stored_bytes
              << " bytes stored, version " << p.version << "\n";
  }
  return kOk;
}

int show_usage(splitfs::Client& client, bool json) {
  const auto usage = client.df();
  splitfs::ServerUsage total{"total", "", 0, 0, 0, 0, 0, 0};
  for (const auto& u : usage) {
    total.files = std::max(total.files, u.files);
    total.logical_bytes += u.logical_bytes;
    total.unique_logical_bytes += u.unique_logical_bytes;
    total.stored_bytes += u.stored_bytes;
    total.garbage_bytes += u.garbage_bytes;
    total.disk_bytes += u.disk_bytes;
  }
  if (json) {
    const auto row = [](const splitfs::ServerUsage& u) {
      Json j{{"server", u.server}};
      if (!u.address.empty())
        j["address"] = u.address;
      j["files"] = u.files;
      j["data_bytes"] = u.logical_bytes;
      j["unique_bytes"] = u.unique_logical_bytes;
      j["stored_bytes"] = u.stored_bytes;
      j["unreferenced_bytes"] = u.garbage_bytes;
      j["disk_bytes"] = u.disk_bytes;
      j["dedup_ratio"] = u.dedup_ratio();
      j["compression_ratio"] = u.compression_ratio();
      return j;
    };
    Json servers = Json::array();
    for (const auto& u : usage)
      servers.push_back(row(u));
    std::cout << Json{{"servers", servers}, {"total", row(total)}}.dump(2) << "\n";
    return kOk;
  }
  std::printf("%-6s %-22s %7s %10s %10s %10s %6s %11s %12s %10s\n", "server", "address", "files",
              "data", "unique", "stored", "dedup", "compression", "unreferenced", "on disk");
  std::vector<const splitfs::ServerUsage*> rows;
  for (const auto& u : usage)
    rows.push_back(&u);
  rows.push_back(&total);
  for (const auto* u : rows) {
    std::printf("%-6s %-22s %7llu %10s %10s %10s %5.2fx %10.2fx %12s %10s\n", u->server.c_str(),
                u->address.c_str(), static_cast<unsigned long long>(u->files),
                human_size(u->logical_bytes).c_str(), human_size(u->unique_logical_bytes).c_str(),
                human_size(u->stored_bytes).c_str(), u->dedup_ratio(), u->compression_ratio(),
                human_size(u->garbage_bytes).c_str(), human_size(u->disk_bytes).c_str());
  }
  return kOk;
}

// `splitfs stats MOUNTPOINT --json`: the stats file's "key: value" lines as one object, numbers
// as numbers.
std::string stats_json(const std::string& text) {
  Json out = Json::object();
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    const auto colon = line.find(": ");
    if (colon == std::string::npos)
      continue;
    const std::string key = line.substr(0, colon);
    const std::string value = line.substr(colon + 2);
    if (!value.empty() && value.size() < 20 &&
        value.find_first_not_of("0123456789") == std::string::npos) {
      out[key] = std::stoull(value);
    } else {
      out[key] = value;
    }
  }
  return out.dump(2) + "\n";
}

int remove_files(splitfs::Client& client, const std::vector<std::string>& names) {
  Batch batch(&client, "rm", false);
  for (const auto& name : names) {
    if (batch.run(name, name, [&] { client.remove(name); }))
      std::cout << "removed " << name << "\n";
  }
  return batch.finish();
}

}  // namespace splitfs::cli
