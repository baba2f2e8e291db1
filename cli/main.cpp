// The splitfs command: init a client home, store, fetch, verify, list, remove and inspect files
// (files.hpp); mount the store as a folder, unmount it and show a mount's counters; check files for
// malware. docs/cli.md describes every command; errors.hpp has the documented exit codes.
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <splitfs/client.hpp>
#include <sstream>
#include <thread>

#include "cli/errors.hpp"
#include "cli/files.hpp"
#include "cli/progress.hpp"
#include "common/fd.hpp"
#include "core/config_show.hpp"
#include "core/scan_gate.hpp"
#include "fs/journal.hpp"
#include "fs/mount.hpp"
#include "fs/status.hpp"
#include "scan/quarantine.hpp"
#include "scan/scan.hpp"

namespace fs = std::filesystem;

namespace {

using splitfs::cli::human_size;
using splitfs::cli::kFailure;
using splitfs::cli::kMalicious;
using splitfs::cli::kOk;
using splitfs::cli::kUnavailable;
using splitfs::cli::kUsage;
using splitfs::cli::local_time;
using splitfs::cli::report;

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
  // Readable once the process has ended, so the wait ends with it; without one (a kernel before
  // 5.3), a look every 50 ms.
  const splitfs::Fd exited(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
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
    if (exited) {
      pollfd ready{exited.get(), POLLIN, 0};
      ::poll(&ready, 1, 250);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
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
  // A store or fetch moves its file in batches of a few MiB, allocated and freed over and over;
  // by glibc's defaults the heap hands that memory back after each and faults it in afresh
  // (160,000 page faults per GiB fetched). A command's life is short: keep the memory. `mount`
  // sets its own bounds (run_mount).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  CLI::App app{"splitfs: keep files split across an HTTPS server and a TCP server, encrypted.",
               "splitfs"};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  splitfs store -r ~/photos          store a folder (as photos/...), with progress\n"
      "  splitfs ls -l --sort size          the stored files, largest first\n"
      "  splitfs fetch -r photos -o /tmp    fetch the folder back as /tmp/photos/...\n"
      "  splitfs verify photos/cat.jpg      check every chunk without writing anything\n"
      "Each command has --help with an example. Exit codes: 0 ok, 1 error, 2 usage, 3 not found,\n"
      "4 integrity, 5 server unavailable, 6 refused identity or not enrolled, 7 configuration,\n"
      "8 conflict, 9 quota or out of space, 10 malicious file blocked.");
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
  init->add_flag("--legacy", init_options.legacy,
                 "the problem statement's original servers: plain HTTP (--https http://HOST:5000) "
                 "and raw TCP (--tcp HOST:65432), no TLS, no fingerprints");

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
      "Example: splitfs key export /media/usb/splitfs.key\n"
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

  std::vector<std::string> files;
  std::string as_name;
  bool recursive = false;
  bool no_scan = false;
  bool quiet = false;
  auto* store = app.add_subcommand(
      "store", "store local files (each under its base name) and folders (with -r)");
  store->footer(
      "Examples: splitfs store report.pdf photo.jpg\n"
      "          splitfs store -r ~/photos              (stored as photos/...)\n"
      "          splitfs store notes.txt --as work/notes.txt\n"
      "On a terminal each file's progress is drawn (bytes, rate, time left), then a total.\n"
      "A file that fails is reported and the others are still stored; the exit code is the\n"
      "first failure's. A server unavailable or refusing this client stops the command.");
  store->add_option("files", files, "local files and folders")->required();
  store->add_flag("-r,--recursive", recursive,
                  "store folders with everything in them, as FOLDER/relative/path");
  store->add_option("--as", as_name, "store a single file under this name (a folder: this prefix)");
  store->add_flag("--no-scan", no_scan, "store without the malware check (says so on stderr)");
  store->add_flag("-q,--quiet", quiet, "print errors only: no progress, no line per file");

  std::vector<std::string> names;
  std::string dest = ".";
  auto* fetch = app.add_subcommand("fetch", "fetch stored files, or folders with -r");
  fetch->footer(
      "Examples: splitfs fetch report.pdf -o ~/Downloads/\n"
      "          splitfs fetch report.pdf -o /tmp/copy.pdf\n"
      "          splitfs fetch -r photos -o ~/restore    (writes ~/restore/photos/...)\n"
      "Every byte is verified before a file appears under its name. Progress as for store.");
  fetch->add_option("names", names, "stored names (with -r: folders too)")->required();
  fetch->add_option("-o,--output", dest,
                    "destination folder (created with -r), or file for a single name");
  fetch->add_flag("-r,--recursive", recursive,
                  "fetch every stored file under each name, recreating the folders");
  fetch->add_flag("--no-scan", no_scan, "fetch without the malware check (says so on stderr)");
  fetch->add_flag("-q,--quiet", quiet, "print errors only: no progress, no line per file");

  bool json = false;
  auto* verify = app.add_subcommand(
      "verify", "fetch and check stored files (every chunk, the whole file), writing nothing");
  verify->footer(
      "Examples: splitfs verify report.pdf\n"
      "          splitfs verify -r photos --json\n"
      "Prints each file's size, version and SHA-256 (compare: sha256sum FILE). Exit code 4\n"
      "names the server that sent data failing verification.");
  verify->add_option("names", names, "stored names (with -r: folders too)")->required();
  verify->add_flag("-r,--recursive", recursive, "verify every stored file under each name");
  verify->add_flag("--json", json, "a JSON array, one object per file");
  verify->add_flag("-q,--quiet", quiet, "print errors only: no progress, no line per file");

  std::vector<std::string> scan_paths;
  auto* scan = app.add_subcommand("scan", "check local files for malware, storing nothing");
  scan->footer(
      "Example: splitfs scan invoice.pdf photos.zip\n"
      "Prints each file's verdict (clean, suspicious, malicious) and what the policy would do;\n"
      "exits 10 when a file would be blocked.");
  scan->add_option("files", scan_paths, "local files")->required()->check(CLI::ExistingFile);
  scan->add_flag("--json", json, "one JSON object per file");

  auto* quarantine = app.add_subcommand("quarantine", "show the files a malware check blocked");
  quarantine->require_subcommand(1);
  quarantine->footer("Example: splitfs quarantine list");
  auto* quarantine_list =
      quarantine->add_subcommand("list", "blocked files, newest first, and where they are kept");
  quarantine_list->footer("Example: splitfs quarantine list --json");
  quarantine_list->add_flag("--json", json, "as JSON");

  std::string ls_prefix;
  bool long_form = false;
  bool reverse = false;
  std::string sort = "name";
  auto* ls = app.add_subcommand("ls", "list stored files: size, chunks, when stored, name");
  ls->footer(
      "Examples: splitfs ls\n"
      "          splitfs ls -l --sort size photos/\n"
      "          splitfs ls --json | jq '.[].name'\n"
      "Files written through a mount are listed by their path in it (/docs/a.txt).");
  ls->add_option("prefix", ls_prefix, "only names that start with this");
  ls->add_flag("-l,--long", long_form, "long form: human size, version, where it came from");
  ls->add_option("--sort", sort, "name (default), size (largest first) or time (newest first)")
      ->check(CLI::IsMember({"name", "size", "time"}));
  ls->add_flag("-r,--reverse", reverse, "reverse the order");
  ls->add_flag("--json", json, "a JSON array, one object per file");

  auto* rm = app.add_subcommand("rm", "remove stored files");
  rm->footer("Example: splitfs rm report.pdf old/notes.txt");
  rm->add_option("names", names, "stored names")->required();

  std::string stat_name;
  auto* stat = app.add_subcommand("stat", "show a stored file's size, version and chunk placement");
  stat->footer(
      "Example: splitfs stat report.pdf\n"
      "Shows how many chunks, shares and stored bytes (compressed, encrypted) each server holds.");
  stat->add_option("name", stat_name, "stored name")->required();
  stat->add_flag("--json", json, "one JSON object");

  auto* df = app.add_subcommand("df", "show what your stored data takes on each server");
  df->footer(
      "Example: splitfs df\n"
      "data: your files as stored, each time it is stored; unique: after deduplication;\n"
      "stored: after compression and encryption; unreferenced: removed or replaced, until the\n"
      "server compacts; on disk: all of it with the servers' records. Sizes count whole 1 KiB\n"
      "chunks.");
  df->add_flag("--json", json, "one JSON object: each server and the total");

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
  stats->footer("Example: splitfs stats ~/vault --json");
  stats->add_option("mountpoint", mountpoint, "the mount point")->required();
  stats->add_flag("--json", json, "one JSON object");

  std::vector<std::string> status_mounts;
  auto* status =
      app.add_subcommand("status", "show whether the servers answer and what mounts still upload");
  status->footer(
      "Example: splitfs status --json\n"
      "Exit code 5 when a server does not answer.");
  status->add_option("mountpoint", status_mounts, "mounts to show (default: every splitfs mount)");
  status->add_flag("--json", json, "one JSON object");

  auto* config = app.add_subcommand("config", "show the client's settings");
  config->require_subcommand(1);
  config->footer("Example: splitfs config show");
  auto* config_show = config->add_subcommand(
      "show", "print every setting in effect and where it comes from, secrets masked");
  config_show->add_flag("--json", json, "one JSON object");
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
      std::cout << (json ? splitfs::core::settings_json(settings)
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
      return splitfs::fs::print_status(home_dir, status_mounts, json, std::cout);
    if (*umount)
      return unmount(mountpoint, lazy, timeout_seconds);
    if (*stats) {
      const std::string text = read_stats(mountpoint);
      if (text.empty())
        return report(mountpoint + " is not a splitfs mount", kFailure);
      std::cout << (json ? splitfs::cli::stats_json(text) : text);
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
    if (*store)
      return splitfs::cli::store_files(client, files, recursive, as_name, no_scan, quiet);
    if (*fetch)
      return splitfs::cli::fetch_files(client, home_dir, names, recursive, dest, no_scan, quiet);
    if (*verify)
      return splitfs::cli::verify_files(client, names, recursive, json, quiet);
    if (*ls)
      return splitfs::cli::list_files(client, ls_prefix, long_form, sort, reverse, json);
    if (*rm)
      return splitfs::cli::remove_files(client, names);
    if (*stat)
      return splitfs::cli::stat_file(client, stat_name, json);
    if (*df)
      return splitfs::cli::show_usage(client, json);
    return kOk;
  } catch (const std::exception& e) {
    return splitfs::cli::report_error("", e);
  }
}
