// `splitfs status`: whether the two servers answer (probe.hpp), what each running mount still has
// to upload and how full its cache is (its stats file), and what the client home's write-back
// journal holds (journal.hpp, including mounts that ended with uploads pending), as text or JSON.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

namespace splitfs::fs {

// mountpoints: the mounts to show; empty: every splitfs mount of this machine. Returns 0 when
// both servers answer, 5 (the CLI's "server unavailable") when one does not. Throws
// splitfs::ConfigError when home holds no configuration.
int print_status(const std::filesystem::path& home, const std::vector<std::string>& mountpoints,
                 bool json, std::ostream& out);

}  // namespace splitfs::fs
