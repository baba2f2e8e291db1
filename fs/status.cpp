#include "fs/status.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>

#include "core/config_show.hpp"
#include "fs/journal.hpp"
#include "fs/mount.hpp"
#include "fs/mounts.hpp"
#include "fs/probe.hpp"

namespace splitfs::fs {

namespace fsys = std::filesystem;

namespace {

constexpr auto kProbeTimeout = std::chrono::milliseconds(3000);
constexpr int kUnavailableExit = 5;

std::vector<std::string> splitfs_mounts() {
  std::vector<std::string> out;
  for (const MountEntry& m : read_mounts()) {
    if (m.type == kMountType)
      out.push_back(m.where.string());
  }
  return out;
}

// The "key: value" lines of a mount's stats file; empty if it is not a splitfs mount.
std::map<std::string, std::string> read_stats(const fsys::path& mountpoint) {
  std::map<std::string, std::string> out;
  std::ifstream in(mountpoint / kControlDir / kStatsFile);
  std::string line;
  while (std::getline(in, line)) {
    const auto colon = line.find(": ");
    if (colon != std::string::npos)
      out[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return out;
}

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char code[8];
          std::snprintf(code, sizeof code, "\\u%04x", static_cast<unsigned char>(c));
          out += code;
        } else {
          out.push_back(c);
        }
    }
  }
  return out + "\"";
}

std::uint64_t number(const std::map<std::string, std::string>& stats, const std::string& key) {
  const auto it = stats.find(key);
  if (it == stats.end())
    return 0;
  try {
    return std::stoull(it->second);
  } catch (const std::exception&) {
    return 0;
  }
}

std::string text_of(const std::map<std::string, std::string>& stats, const std::string& key) {
  const auto it = stats.find(key);
  return it == stats.end() ? std::string() : it->second;
}

std::string human(std::uint64_t bytes) {
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

}  // namespace

int print_status(const fsys::path& home, const std::vector<std::string>& mountpoints, bool json,
                 std::ostream& out) {
  ServerProber prober(home, kProbeTimeout);
  const auto servers = prober.probe();
  bool all_up = true;
  for (const auto& s : servers)
    all_up = all_up && s.reachable;
  struct Shown {
    std::string mountpoint;
    std::map<std::string, std::string> stats;
  };
  std::vector<Shown> mounts;
  for (const auto& m : mountpoints.empty() ? splitfs_mounts() : mountpoints)
    mounts.push_back({m, read_stats(m)});
  const JournalSummary journal = summarize_journal(home / "writeback");
  const std::string identity = core::client_identity_text(home);

  if (json) {
    out << "{\"servers\":[";
    for (std::size_t i = 0; i < servers.size(); ++i) {
      const auto& s = servers[i];
      out << (i ? "," : "") << "{\"server\":" << json_string(s.server)
          << ",\"address\":" << json_string(s.address)
          << ",\"reachable\":" << (s.reachable ? "true" : "false")
          << ",\"latency_ms\":" << s.latency.count() << ",\"error\":" << json_string(s.error)
          << ",\"pinned_fingerprint\":" << json_string(s.pinned) << "}";
    }
    out << "],\"client_fingerprint\":" << json_string(identity) << ",\"mounts\":[";
    for (std::size_t i = 0; i < mounts.size(); ++i) {
      const auto& m = mounts[i];
      out << (i ? "," : "") << "{\"mountpoint\":" << json_string(m.mountpoint);
      if (m.stats.empty()) {
        out << ",\"error\":\"not a splitfs mount, or not answering\"}";
        continue;
      }
      out << ",\"pid\":" << number(m.stats, "pid")
          << ",\"servers_reachable\":" << (number(m.stats, "servers_reachable") ? "true" : "false")
          << ",\"files_pending\":" << number(m.stats, "files_pending")
          << ",\"uploads_pending\":" << number(m.stats, "uploads_pending")
          << ",\"bytes_pending\":" << number(m.stats, "bytes_pending")
          << ",\"writeback_bytes\":" << number(m.stats, "writeback_bytes")
          << ",\"writeback_limit\":" << number(m.stats, "writeback_limit")
          << ",\"cache_bytes\":" << number(m.stats, "cache_bytes")
          << ",\"cache_capacity\":" << number(m.stats, "cache_capacity")
          << ",\"cache_hits\":" << number(m.stats, "cache_hits")
          << ",\"cache_misses\":" << number(m.stats, "cache_misses")
          << ",\"journal\":" << json_string(text_of(m.stats, "journal"))
          << ",\"last_error\":" << json_string(text_of(m.stats, "last_error")) << "}";
    }
    out << "],\"journal\":{\"folder\":" << json_string((home / "writeback").string())
        << ",\"files\":" << journal.files << ",\"bytes\":" << journal.bytes
        << ",\"namespace_changes\":" << (journal.tree ? "true" : "false") << "}}\n";
    return all_up ? 0 : kUnavailableExit;
  }

  out << "servers:\n";
  for (const auto& s : servers) {
    out << "  " << s.server << (s.server.size() < 5 ? std::string(5 - s.server.size(), ' ') : "")
        << " " << s.address << "  ";
    if (s.reachable)
      out << "reachable (" << s.latency.count() << " ms)\n";
    else
      out << "UNREACHABLE: " << s.error << "\n";
    if (!s.pinned.empty())
      out << "        identity pinned: " << s.pinned << "\n";
  }
  out << "this client's identity: " << identity << "\n";
  out << "mounts:" << (mounts.empty() ? " none\n" : "\n");
  for (const auto& m : mounts) {
    out << "  " << m.mountpoint;
    if (m.stats.empty()) {
      out << ": not a splitfs mount, or not answering\n";
      continue;
    }
    out << " (pid " << number(m.stats, "pid") << ")\n"
        << "    uploads pending: " << number(m.stats, "uploads_pending") << " file(s), "
        << human(number(m.stats, "bytes_pending"))
        << "; files with unsaved changes: " << number(m.stats, "files_pending") << "\n"
        << "    servers reachable from the mount: "
        << (number(m.stats, "servers_reachable") ? "yes" : "no") << "\n"
        << "    write-back area: " << human(number(m.stats, "writeback_bytes")) << " of "
        << human(number(m.stats, "writeback_limit")) << "\n"
        << "    cache: " << human(number(m.stats, "cache_bytes")) << " of "
        << human(number(m.stats, "cache_capacity")) << " (" << number(m.stats, "cache_hits")
        << " hits, " << number(m.stats, "cache_misses") << " misses)\n";
    if (const std::string error = text_of(m.stats, "last_error"); !error.empty())
      out << "    last error: " << error << "\n";
  }
  out << "journal (" << (home / "writeback").string() << "): " << journal.files << " file(s), "
      << human(journal.bytes) << " not on the servers yet"
      << (journal.tree ? ", with namespace changes" : "") << "\n";
  return all_up ? 0 : kUnavailableExit;
}

}  // namespace splitfs::fs
