// What a running process holds, read from /proc: open file descriptors and resident memory. Used
// to show that servers give back what thousands of connections took.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace splitfs::testing {

// Entries in /proc/<pid>/fd; -1 if the process cannot be inspected.
long open_descriptors(pid_t pid);
// Of those, the ones open on a file under `dir` (a server's store: its index connections and the
// packs it keeps open for reading, both bounded caches).
long descriptors_under(pid_t pid, const std::string& dir);
// VmRSS of /proc/<pid>/status in bytes; 0 if the process cannot be inspected.
std::uint64_t resident_bytes(pid_t pid);

}  // namespace splitfs::testing
