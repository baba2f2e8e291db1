// The splitfs command: init a client home, store, fetch, list, remove and inspect files; mount
// the store as a folder, unmount it and show a mount's counters.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <splitfs/client.hpp>
#include <sstream>
#include <thread>

#include "core/config.hpp"
#include "core/config_show.hpp"
#include "core/scan_gate.hpp"
#include "fs/journal.hpp"
#include "fs/mount.hpp"
#include "fs/remote.hpp"
#include "fs/status.hpp"
#include "scan/quarantine.hpp"
#include "scan/scan.hpp"

namespace fs = std::filesystem;

namespace {

// Exit codes, documented in the README.
enum Exit : int {
  kOk = 0,
  kFailure = 1,
  kUsage = 2,
  kNotFound = 3,
  kIntegrity = 4,
  kUnavailable = 5,
  kAuth = 6,
  kConfig = 7,
  kConflict = 8,
  kQuota = 9,
  kMalicious = 10,
};

std::string human_size(std::uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return text;
}

std::string local_time(std::int64_t ns) {
  const std::time_t seconds = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
  return text;
}

int report(const char* what, int code) {
  std::cerr << "splitfs: " << what << "\n";
  return code;
}

int report(const std::string& what, int code) {
  return report(what.c_str(), code);
}

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

// The counters a mount shows in MOUNTPOINT/.splitfs/stats; empty if it is not a splitfs mount.
std::string read_stats(const fs::path& mountpoint) {
  std::ifstream in(mountpoint / splitfs::fs::kControlDir / splitfs::fs::kStatsFile);
  std::stringstream text;
  text << in.rdbuf();
  return in ? text.str() : std::string();
}

// Runs a program and returns its exit status (127 if it could not run).
int run(const std::vector<std::string>& args) {
  std::vector<char*> argv;  // built before fork: the child only execs
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0)
    return 127;
  if (pid == 0) {
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// Whether pid is running (a process that has exited but is not reaped yet is not).
bool running(pid_t pid) {
  if (::kill(pid, 0) != 0 && errno != EPERM)
    return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto close = line.rfind(')');
  return !(close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z');
}

// Unmounts, then waits for the mount's process to finish its uploads and exit.
int unmount(const fs::path& mountpoint, bool lazy, int timeout_seconds) {
  const std::string stats = read_stats(mountpoint);
  pid_t pid = 0;
  if (const auto at = stats.find("pid: "); at != std::string::npos)
    pid = static_cast<pid_t>(std::stol(stats.substr(at + 5)));
  // Where the mount journals what it could not upload, to say what is left once it is gone.
  fs::path journal;
  if (const auto at = stats.find("\njournal: "); at != std::string::npos)
    journal = stats.substr(at + 10, stats.find('\n', at + 10) - (at + 10));
  std::vector<std::string> args{"fusermount3", "-u"};
  if (lazy)
    args.emplace_back("-z");
  args.push_back(mountpoint.string());
  if (run(args) != 0)
    return report("cannot unmount " + mountpoint.string() +
                      (lazy ? "" : " (busy? close the files using it, or use --lazy)"),
                  kFailure);
  if (pid <= 0)
    return kOk;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(timeout_seconds);
  bool told = false;
  while (running(pid)) {
    const auto now = std::chrono::steady_clock::now();
    if (now > deadline) {
      return report("the mount process " + std::to_string(pid) +
                        " is still storing pending changes; it keeps going in the background",
                    kFailure);
    }
    if (!told && now - start > std::chrono::seconds(1)) {
      std::cerr << "splitfs: waiting for pending uploads to finish...\n";
      told = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!journal.empty() && fs::exists(journal)) {
    const auto left = splitfs::fs::summarize_journal(journal);
    if (left.files > 0 || left.tree) {
      return report(std::to_string(left.files) + " file(s) (" + human_size(left.bytes) + ")" +
                        (left.tree ? " and namespace changes" : "") +
                        " could not reach the servers: they are kept in " + journal.string() +
                        " and the next mount of this store uploads them",
                    kUnavailable);
    }
  }
  return kOk;
}

// ---- Malicious file checks ----

std::string_view action_text(splitfs::scan::Action action) {
  switch (action) {
    case splitfs::scan::Action::block:
      return "blocked";
    case splitfs::scan::Action::warn:
      return "let through with a warning";
    case splitfs::scan::Action::allow:
      break;
  }
  return "allowed";
}

// `splitfs scan FILE...`: each file's verdict under the configured policy, storing nothing.
int scan_files(const fs::path& home, const std::vector<std::string>& files, bool json) {
  const splitfs::core::ScanConfig config = splitfs::core::load_scan_config(home);
  const auto scanner = splitfs::scan::Scanner::shared(config.settings);
  for (const auto& status : scanner->status()) {
    if (!status.unavailable.empty())
      std::cerr << "splitfs: " << status.name << " unavailable: " << status.unavailable << "\n";
  }
  bool blocked = false;
  bool failed = false;
  std::vector<std::string> items;
  for (const auto& file : files) {
    splitfs::scan::Verdict verdict;
    try {
      splitfs::scan::FileSource source{fs::path(file)};
      verdict = scanner->scan(source, fs::path(file).filename().string());
    } catch (const splitfs::Error& e) {
      report(file + ": " + e.what(), kFailure);
      failed = true;
      continue;
    }
    const auto action = config.policy.decide(verdict.severity);
    blocked = blocked || action == splitfs::scan::Action::block;
    if (json) {
      items.push_back(splitfs::scan::to_json(file, verdict, action));
      continue;
    }
    if (verdict.findings.empty()) {
      std::cout << file << ": clean\n";
    } else {
      std::cout << file << ": " << splitfs::scan::to_string(verdict.severity) << ", "
                << action_text(action) << "\n";
    }
    for (const auto& f : verdict.findings) {
      std::cout << "  " << splitfs::scan::to_string(f.severity) << "  " << f.detector << " "
                << f.rule << (f.where.empty() ? "" : " in " + f.where) << ": " << f.detail << "\n";
    }
    for (const auto& note : verdict.notes) {
      if (note.find(" unavailable: ") == std::string::npos)
        std::cout << "  not checked: " << note << "\n";
    }
  }
  if (json) {
    std::cout << "[";
    for (std::size_t i = 0; i < items.size(); ++i)
      std::cout << (i ? ",\n " : "") << items[i];
    std::cout << "]\n";
  }
  return blocked ? kMalicious : failed ? kFailure : kOk;
}

// `splitfs quarantine list`: what was blocked, newest first, and where its bytes are.
int list_quarantine(const fs::path& home, bool json) {
  const splitfs::core::ScanConfig config = splitfs::core::load_scan_config(home);
  const splitfs::scan::Quarantine quarantine(config.quarantine, config.quarantine_max_bytes);
  const auto entries = quarantine.list();
  if (json) {
    std::cout << splitfs::scan::to_json(entries) << "\n";
    return kOk;
  }
  if (entries.empty()) {
    std::cout << "the quarantine (" << config.quarantine.string() << ") is empty\n";
    return kOk;
  }
  for (const auto& e : entries) {
    const splitfs::scan::Finding* worst = e.findings.empty() ? nullptr : &e.findings.front();
    std::cout << e.id << "  " << local_time(e.time_ns) << "  " << e.origin << "  "
              << splitfs::scan::to_string(e.severity) << "  "
              << (worst ? worst->detector + " " + worst->rule : std::string("?")) << "  " << e.file
              << "\n";
    if (!e.data.empty()) {
      std::cout << "    kept as " << e.data.string() << " (" << human_size(e.size) << ", sha256 "
                << e.sha256 << ")\n";
    } else {
      std::cout << "    not kept: " << e.not_kept << "\n";
    }
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"splitfs: keep files split across an HTTPS server and a TCP server, encrypted.",
               "splitfs"};
  app.require_subcommand(1);
  std::string home;
  app.add_option("--home", home, "client home folder (default $SPLITFS_HOME or ~/.config/splitfs)");

  splitfs::InitOptions init_options;
  auto* init = app.add_subcommand("init", "write a client configuration and content key");
  init->footer(
      "Example: splitfs init --https 127.0.0.1:5000 --https-fingerprint SHA256:... \\\n"
      "                      --tcp 127.0.0.1:65432 --tcp-fingerprint SHA256:...");
  init->add_option("--https", init_options.https, "HTTPS server HOST:PORT")->required();
  init->add_option("--tcp", init_options.tcp, "TCP server HOST:PORT")->required();
  init->add_option("--https-fingerprint", init_options.https_fingerprint,
                   "the HTTPS server's certificate fingerprint (SHA256:...)");
  init->add_option("--tcp-fingerprint", init_options.tcp_fingerprint,
                   "the TCP server's certificate fingerprint (SHA256:...)");
  init->add_flag("--accept-new", init_options.accept_new,
                 "trust and pin the identities the servers present now");
  init->add_flag("--force", init_options.force, "replace an existing configuration");
  init->add_flag("--new-key", init_options.new_key, "create a new content key (with --force)");
  bool init_passphrase = false;
  init->add_flag("--passphrase", init_passphrase,
                 "protect a new content key with a passphrase (asked, or $SPLITFS_NEW_PASSPHRASE)");

  auto* id = app.add_subcommand(
      "id", "show this client's certificate fingerprint, for the servers' operators to enrol");
  id->footer(
      "Example: splitfs id\n"
      "Then on each server: splitfs-https-server --data DIR users add NAME SHA256:...");

  std::string key_file;
  bool key_force = false;
  bool key_unprotected = false;
  bool key_remove = false;
  auto* key = app.add_subcommand("key", "export, import or protect the content key");
  key->require_subcommand(1);
  key->footer(
      "Without the content key the stored data cannot be read by anyone: keep an exported copy.\n"
      "Passphrases are asked on the terminal, or taken from $SPLITFS_PASSPHRASE (and\n"
      "$SPLITFS_NEW_PASSPHRASE for a new one) in scripts.");
  auto* key_export =
      key->add_subcommand("export", "write the content key to FILE, protected by a passphrase");
  key_export->footer("Example: splitfs key export /media/usb/splitfs.key");
  key_export->add_option("file", key_file, "a new file")->required();
  auto* key_import = key->add_subcommand("import", "install a key written by 'splitfs key export'");
  key_import->footer("Example: splitfs key import /media/usb/splitfs.key --force");
  key_import->add_option("file", key_file, "the exported key")
      ->required()
      ->check(CLI::ExistingFile);
  key_import->add_flag("--force", key_force,
                       "replace another key in the client home (kept as key.old)");
  key_import->add_flag("--unprotected", key_unprotected,
                       "keep it in clear (mode 0600) instead of under the passphrase");
  auto* key_passwd = key->add_subcommand(
      "passwd", "protect the content key with a passphrase, or change or remove it");
  key_passwd->footer("Example: splitfs key passwd");
  key_passwd->add_flag("--remove", key_remove, "keep the key in clear (mode 0600)");
  init->add_flag("--legacy", init_options.legacy,
                 "the problem statement's original servers: plain HTTP (--https http://HOST:5000) "
                 "and raw TCP (--tcp HOST:65432), no TLS, no fingerprints");

  std::vector<std::string> files;
  std::string as_name;
  auto* store = app.add_subcommand("store", "store local files (each under its base name)");
  store->footer("Example: splitfs store report.pdf photos.tar --as backup/photos.tar");
  store->add_option("files", files, "local files")->required()->check(CLI::ExistingFile);
  store->add_option("--as", as_name, "store a single file under this name");
  bool no_scan = false;
  store->add_flag("--no-scan", no_scan, "store without the malware check (says so on stderr)");

  std::vector<std::string> names;
  std::string dest = ".";
  auto* fetch = app.add_subcommand("fetch", "fetch stored files");
  fetch->footer("Example: splitfs fetch report.pdf -o ~/Downloads/");
  fetch->add_option("names", names, "stored names")->required();
  fetch->add_option("-o,--output", dest, "destination folder, or file for a single name");
  fetch->add_flag("--no-scan", no_scan, "fetch without the malware check (says so on stderr)");

  std::vector<std::string> scan_paths;
  bool json = false;
  auto* scan = app.add_subcommand("scan", "check local files for malware, storing nothing");
  scan->footer(
      "Example: splitfs scan invoice.pdf photos.zip\n"
      "Prints each file's verdict (clean, suspicious, malicious) and what the policy would do;\n"
      "exits 10 when a file would be blocked.");
  scan->add_option("files", scan_paths, "local files")->required()->check(CLI::ExistingFile);
  scan->add_flag("--json", json, "one JSON object per file");

  auto* quarantine = app.add_subcommand("quarantine", "show the files a malware check blocked");
  quarantine->require_subcommand(1);
  auto* quarantine_list =
      quarantine->add_subcommand("list", "blocked files, newest first, and where they are kept");
  quarantine_list->footer("Example: splitfs quarantine list --json");
  quarantine_list->add_flag("--json", json, "as JSON");

  auto* ls = app.add_subcommand("ls", "list stored files");
  ls->footer("Example: splitfs ls");

  auto* rm = app.add_subcommand("rm", "remove stored files");
  rm->footer("Example: splitfs rm report.pdf");
  rm->add_option("names", names, "stored names")->required();

  std::string stat_name;
  auto* stat = app.add_subcommand("stat", "show a stored file's size, version and chunk placement");
  stat->footer("Example: splitfs stat report.pdf");
  stat->add_option("name", stat_name, "stored name")->required();

  auto* df = app.add_subcommand("df", "show what your stored data takes on each server");
  df->footer(
      "Example: splitfs df\n"
      "data: your files as stored, each time it is stored; unique: after deduplication;\n"
      "stored: after compression and encryption; unreferenced: removed or replaced, until the\n"
      "server compacts; on disk: all of it with the servers' records. Sizes count whole 1 KiB\n"
      "chunks.");

  std::string mountpoint;
  bool foreground = false;
  std::vector<std::string> mount_options;
  auto* mount = app.add_subcommand("mount", "mount the store as a folder (until unmounted)");
  mount->footer(
      "Example: splitfs mount ~/vault -o cache_size=512M\n"
      "Options (-o, comma-separated): cache_size=SIZE (default 256M), readahead=SEGMENTS (32),\n"
      "attr_timeout=S (1), entry_timeout=S (1), refresh=S (3), commit_delay=S (0.5), log=FILE,\n"
      "writeback_size=SIZE (a quarter of the free space), unmount_wait=S (30),\n"
      "debug, noscan (store without the malware check; logged); anything else goes to FUSE\n"
      "(allow_other, ro, ...).");
  mount->add_option("mountpoint", mountpoint, "an existing empty folder")->required();
  mount->add_flag("-f,--foreground", foreground, "stay in the foreground");
  mount->add_option("-o", mount_options, "mount options")->allow_extra_args(false);

  bool lazy = false;
  int timeout_seconds = 600;
  auto* umount = app.add_subcommand("umount", "unmount, after pending uploads are done");
  umount->footer(
      "Example: splitfs umount ~/vault\n"
      "Exit code 5 when changes could not reach the servers: they stay in the client home's\n"
      "writeback/ journal and the next mount of the store uploads them.");
  umount->add_option("mountpoint", mountpoint, "the mount point")->required();
  umount->add_flag("-z,--lazy", lazy, "detach now even if busy (uploads still finish)");
  umount->add_option("--timeout", timeout_seconds, "seconds to wait for uploads (default 600)");

  auto* stats = app.add_subcommand("stats", "show a mount's cache and transfer counters");
  stats->footer("Example: splitfs stats ~/vault");
  stats->add_option("mountpoint", mountpoint, "the mount point")->required();

  std::vector<std::string> status_mounts;
  bool status_json = false;
  auto* status =
      app.add_subcommand("status", "show whether the servers answer and what mounts still upload");
  status->footer("Example: splitfs status --json");
  status->add_option("mountpoint", status_mounts, "mounts to show (default: every splitfs mount)");
  status->add_flag("--json", status_json, "one JSON object");

  bool config_json = false;
  auto* config = app.add_subcommand("config", "show the client's settings");
  config->require_subcommand(1);
  auto* config_show = config->add_subcommand(
      "show", "print every setting in effect and where it comes from, secrets masked");
  config_show->add_flag("--json", config_json, "one JSON object");
  config_show->footer(
      "Example: splitfs config show\n"
      "Precedence: flags (--home), then the environment (SPLITFS_*), then config.toml, then the\n"
      "defaults. The content key, passphrases and private keys are never shown.");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;
  }

  try {
    if (*config_show) {
      const auto settings = splitfs::core::effective_settings(home);
      std::cout << (config_json ? splitfs::core::settings_json(settings)
                                : splitfs::core::settings_text(settings));
      return kOk;
    }
    const fs::path home_dir = home.empty() ? splitfs::Client::default_home() : fs::path(home);
    if (*init) {
      if (init_passphrase) {
        init_options.key_passphrase =
            splitfs::read_passphrase("New passphrase for the content key: ", true);
      }
      const auto result = splitfs::init(home_dir, init_options);
      const auto pinned = [](const std::string& fingerprint) {
        return fingerprint.empty() ? std::string("(original server, no TLS)")
                                   : "pinned " + fingerprint;
      };
      if (!result.warning.empty())
        std::cerr << result.warning << "\n";
      std::cout << "configured " << result.home.string() << "\n"
                << "  HTTPS " << init_options.https << " " << pinned(result.https_fingerprint)
                << "\n"
                << "  TCP   " << init_options.tcp << " " << pinned(result.tcp_fingerprint) << "\n"
                << (result.key_created ? "  new content key written (keep a copy: without it the "
                                         "data cannot be read)\n"
                                       : "  existing content key kept\n");
      if (!result.client_fingerprint.empty()) {
        std::cout << "  this client: " << result.client_fingerprint
                  << "\n  have it enrolled on both servers: <server> --data DIR users add NAME "
                  << result.client_fingerprint << "\n";
      }
      return kOk;
    }
    if (*id) {
      std::cout << splitfs::client_fingerprint(home_dir) << "\n";
      return kOk;
    }
    if (*key) {
      if (*key_export) {
        splitfs::unlock_key(home_dir);  // the current passphrase first, then the new one
        const std::string passphrase =
            splitfs::read_passphrase("Passphrase for the exported key: ", true);
        splitfs::export_key(home_dir, key_file, passphrase);
        std::cout << "exported the content key to " << key_file
                  << " (protected by the passphrase; keep both safe)\n";
      } else if (*key_import) {
        const std::string passphrase =
            splitfs::read_passphrase("Passphrase of " + key_file + ": ", false);
        splitfs::import_key(home_dir, key_file, passphrase, !key_unprotected, key_force);
        std::cout << "imported the content key into " << home_dir.string()
                  << (key_unprotected ? " (in clear, mode 0600)\n" : " (under its passphrase)\n");
      } else if (*key_passwd) {
        splitfs::unlock_key(home_dir);
        const std::string passphrase =
            key_remove ? std::string()
                       : splitfs::read_passphrase("New passphrase for the content key: ", true);
        splitfs::set_key_passphrase(home_dir, passphrase);
        std::cout << (key_remove ? "the content key is now in clear (mode 0600)\n"
                                 : "the content key is now protected by the new passphrase\n");
      }
      return kOk;
    }
    if (*status)
      return splitfs::fs::print_status(home_dir, status_mounts, status_json, std::cout);
    if (*umount)
      return unmount(mountpoint, lazy, timeout_seconds);
    if (*stats) {
      const std::string text = read_stats(mountpoint);
      if (text.empty())
        return report(mountpoint + " is not a splitfs mount", kFailure);
      std::cout << text;
      return kOk;
    }
    if (*mount) {
      splitfs::fs::MountOptions options;
      options.home = home_dir;
      options.mountpoint = mountpoint;
      options.foreground = foreground;
      for (const auto& list : mount_options)
        splitfs::fs::parse_mount_options(list, options);
      return splitfs::fs::run_mount(options);
    }
    if (*scan)
      return scan_files(home_dir, scan_paths, json);
    if (*quarantine_list)
      return list_quarantine(home_dir, json);
    splitfs::Client client(home_dir);
    if (no_scan)
      client.set_scanning(false);
    if (*store) {
      if (!as_name.empty() && files.size() != 1) {
        return report("--as takes a single file", kUsage);
      }
      for (const auto& file : files) {
        const std::string name = as_name.empty() ? fs::path(file).filename().string() : as_name;
        if (no_scan)
          std::cerr << "splitfs: warning: --no-scan: " << file
                    << " is stored without a malware check\n";
        client.store(file, name);
        std::cout << "stored " << file << " as " << name << "\n";
      }
    } else if (*fetch) {
      if (names.size() > 1 && !fs::is_directory(dest)) {
        return report("fetching several names needs -o to name an existing folder", kUsage);
      }
      std::optional<splitfs::core::ScanGate> gate;
      if (!no_scan)
        gate.emplace(splitfs::core::load_scan_config(home_dir));
      for (const auto& name : names) {
        if (no_scan)
          std::cerr << "splitfs: warning: --no-scan: " << name
                    << " is fetched without a malware check\n";
        fs::path written;
        try {
          written = client.fetch(name, dest);
        } catch (const splitfs::NotFound&) {
          if (!fetch_from_mount(client, name, dest, written, gate ? &*gate : nullptr))
            throw;
        }
        std::cout << "fetched " << name << " to " << written.string() << "\n";
      }
    } else if (*ls) {
      for (const auto& e : client.list()) {
        std::printf("%12llu  %8llu chunks  %s  %s\n", static_cast<unsigned long long>(e.size),
                    static_cast<unsigned long long>(e.chunks), local_time(e.stored_at_ns).c_str(),
                    e.name.c_str());
      }
      // Files written through a mount, by their path in it.
      if (const auto tree = mount_tree(client)) {
        for (const auto& p : splitfs::fs::list_paths(tree->tree)) {
          if (!S_ISREG(p.record->mode))
            continue;
          std::printf("%12llu  %8llu chunks  %s  %s\n",
                      static_cast<unsigned long long>(p.record->size),
                      static_cast<unsigned long long>((p.record->size + 1023) / 1024),
                      local_time(p.record->mtime_ns).c_str(), p.path.c_str());
        }
      }
    } else if (*rm) {
      for (const auto& name : names) {
        client.remove(name);
        std::cout << "removed " << name << "\n";
      }
    } else if (*stat) {
      splitfs::FileStat s;
      try {
        s = client.stat(stat_name);
      } catch (const splitfs::NotFound&) {
        if (!stat_from_mount(client, stat_name, s))
          throw;
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
    } else if (*df) {
      const auto usage = client.df();
      std::printf("%-6s %-22s %7s %10s %10s %10s %6s %11s %12s %10s\n", "server", "address",
                  "files", "data", "unique", "stored", "dedup", "compression", "unreferenced",
                  "on disk");
      splitfs::ServerUsage total{"total", "", 0, 0, 0, 0, 0, 0};
      for (const auto& u : usage) {
        std::printf("%-6s %-22s %7llu %10s %10s %10s %5.2fx %10.2fx %12s %10s\n", u.server.c_str(),
                    u.address.c_str(), static_cast<unsigned long long>(u.files),
                    human_size(u.logical_bytes).c_str(), human_size(u.unique_logical_bytes).c_str(),
                    human_size(u.stored_bytes).c_str(), u.dedup_ratio(), u.compression_ratio(),
                    human_size(u.garbage_bytes).c_str(), human_size(u.disk_bytes).c_str());
        total.files = std::max(total.files, u.files);
        total.logical_bytes += u.logical_bytes;
        total.unique_logical_bytes += u.unique_logical_bytes;
        total.stored_bytes += u.stored_bytes;
        total.garbage_bytes += u.garbage_bytes;
        total.disk_bytes += u.disk_bytes;
      }
      std::printf(
          "%-6s %-22s %7llu %10s %10s %10s %5.2fx %10.2fx %12s %10s\n", "total", "",
          static_cast<unsigned long long>(total.files), human_size(total.logical_bytes).c_str(),
          human_size(total.unique_logical_bytes).c_str(), human_size(total.stored_bytes).c_str(),
          total.dedup_ratio(), total.compression_ratio(), human_size(total.garbage_bytes).c_str(),
          human_size(total.disk_bytes).c_str());
    }
    return kOk;
  } catch (const splitfs::NotFound& e) {
    return report(e.what(), kNotFound);
  } catch (const splitfs::IntegrityError& e) {
    return report(e.what(), kIntegrity);
  } catch (const splitfs::ServerUnavailable& e) {
    return report(e.what(), kUnavailable);
  } catch (const splitfs::AuthError& e) {
    return report(e.what(), kAuth);
  } catch (const splitfs::ConfigError& e) {
    return report(e.what(), kConfig);
  } catch (const splitfs::ConflictError& e) {
    return report(e.what(), kConflict);
  } catch (const splitfs::QuotaExceeded& e) {
    return report(e.what(), kQuota);
  } catch (const splitfs::MaliciousFileError& e) {
    return report(e.what(), kMalicious);
  } catch (const std::exception& e) {
    return report(e.what(), kFailure);
  }
}
