// The file commands of splitfs: store, fetch, verify, ls, rm, stat and df on a Client, with
// progress on a terminal (progress.hpp), --json, "did you mean" for names not found, and several
// items per command where a failing item does not stop the others. Each returns the command's
// exit code (errors.hpp) and never throws for a failure it can report.
#pragma once

#include <filesystem>
#include <splitfs/client.hpp>
#include <string>
#include <vector>

namespace splitfs::cli {

// `splitfs store [-r] [--as NAME] FILE|FOLDER...`
int store_files(Client& client, const std::vector<std::string>& args, bool recursive,
                const std::string& as_name, bool no_scan, bool quiet);
// `splitfs fetch [-r] [-o DEST] NAME...`; home: for the malware check of files a mount wrote.
int fetch_files(Client& client, const std::filesystem::path& home,
                const std::vector<std::string>& names, bool recursive, const std::string& dest,
                bool no_scan, bool quiet);
// `splitfs verify [-r] [--json] NAME...`
int verify_files(Client& client, const std::vector<std::string>& names, bool recursive, bool json,
                 bool quiet);
// `splitfs ls [-l] [--sort name|size|time] [-r] [--json] [PREFIX]`
int list_files(Client& client, const std::string& prefix, bool long_form, const std::string& sort,
               bool reverse, bool json);
// `splitfs rm NAME...`
int remove_files(Client& client, const std::vector<std::string>& names);
// `splitfs stat NAME [--json]`
int stat_file(Client& client, const std::string& name, bool json);
// `splitfs df [--json]`
int show_usage(Client& client, bool json);
// `splitfs stats MOUNTPOINT --json`: a mount's stats file ("key: value" lines) as one JSON
// object, numbers as numbers.
std::string stats_json(const std::string& text);

}  // namespace splitfs::cli
