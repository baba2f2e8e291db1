// The splitfs command: init a client home, store, fetch, list, remove and inspect files.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <splitfs/client.hpp>

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

  std::vector<std::string> files;
  std::string as_name;
  auto* store = app.add_subcommand("store", "store local files (each under its base name)");
  store->footer("Example: splitfs store report.pdf photos.tar --as backup/photos.tar");
  store->add_option("files", files, "local files")->required()->check(CLI::ExistingFile);
  store->add_option("--as", as_name, "store a single file under this name");

  std::vector<std::string> names;
  std::string dest = ".";
  auto* fetch = app.add_subcommand("fetch", "fetch stored files");
  fetch->footer("Example: splitfs fetch report.pdf -o ~/Downloads/");
  fetch->add_option("names", names, "stored names")->required();
  fetch->add_option("-o,--output", dest, "destination folder, or file for a single name");

  auto* ls = app.add_subcommand("ls", "list stored files");
  ls->footer("Example: splitfs ls");

  auto* rm = app.add_subcommand("rm", "remove stored files");
  rm->footer("Example: splitfs rm report.pdf");
  rm->add_option("names", names, "stored names")->required();

  std::string stat_name;
  auto* stat = app.add_subcommand("stat", "show a stored file's size, version and chunk placement");
  stat->footer("Example: splitfs stat report.pdf");
  stat->add_option("name", stat_name, "stored name")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;
  }

  try {
    const fs::path home_dir = home.empty() ? splitfs::Client::default_home() : fs::path(home);
    if (*init) {
      const auto result = splitfs::init(home_dir, init_options);
      std::cout << "configured " << result.home.string() << "\n"
                << "  HTTPS " << init_options.https << " pinned " << result.https_fingerprint
                << "\n"
                << "  TCP   " << init_options.tcp << " pinned " << result.tcp_fingerprint << "\n"
                << (result.key_created ? "  new content key written (keep a copy: without it the "
                                         "data cannot be read)\n"
                                       : "  existing content key kept\n");
      return kOk;
    }
    splitfs::Client client(home_dir);
    if (*store) {
      if (!as_name.empty() && files.size() != 1) {
        return report("--as takes a single file", kUsage);
      }
      for (const auto& file : files) {
        const std::string name = as_name.empty() ? fs::path(file).filename().string() : as_name;
        client.store(file, name);
        std::cout << "stored " << file << " as " << name << "\n";
      }
    } else if (*fetch) {
      if (names.size() > 1 && !fs::is_directory(dest)) {
        return report("fetching several names needs -o to name an existing folder", kUsage);
      }
      for (const auto& name : names) {
        const fs::path written = client.fetch(name, dest);
        std::cout << "fetched " << name << " to " << written.string() << "\n";
      }
    } else if (*ls) {
      for (const auto& e : client.list()) {
        std::printf("%12llu  %8llu chunks  %s  %s\n", static_cast<unsigned long long>(e.size),
                    static_cast<unsigned long long>(e.chunks), local_time(e.stored_at_ns).c_str(),
                    e.name.c_str());
      }
    } else if (*rm) {
      for (const auto& name : names) {
        client.remove(name);
        std::cout << "removed " << name << "\n";
      }
    } else if (*stat) {
      const auto s = client.stat(stat_name);
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
  } catch (const std::exception& e) {
    return report(e.what(), kFailure);
  }
}
