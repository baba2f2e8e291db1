// Micro benchmark of the tree encoders a mount runs at every close(): encode_tree() of a whole
// tree, and Namespace::encode_snapshot() with a `committed` map over about 10% of the inodes and a
// few orphans to filter out. Trees of 2,000 and 20,000 files in one directory, and 100
// directories of 200 files. Prints ns per encode (best and median round) and MB/s of output (best
// round), and a checksum of the output so that runs of two builds can be compared for identical
// bytes.
//
//   bench_tree_encode [--rounds N] [--budget-ms MS]
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fs/namespace.hpp"
#include "fs/tree.hpp"

namespace {

using splitfs::Bytes;
using namespace splitfs::fs;
using Committed = std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>;

// `dirs` directories under the root with `files` files each; dirs == 0 puts the files in the root.
Tree make_tree(std::uint32_t dirs, std::uint32_t files) {
  Tree t = make_empty_tree(0755, 1000, 1000, 1'700'000'000'000'000'000);
  std::uint64_t next = kRootIno + 1;
  const auto add_files = [&](std::uint64_t dir) {
    char name[32];
    for (std::uint32_t f = 0; f < files; ++f) {
      const std::uint64_t ino = next++;
      InodeRecord& r = t.inodes[ino];
      r.mode = S_IFREG | 0644;
      r.uid = r.gid = 1000;
      r.size = 4096;
      r.content_version = ino * 3;
      r.atime_ns = r.mtime_ns = r.ctime_ns = 1'700'000'000'000'000'000 + ino;
      std::snprintf(name, sizeof name, "file-%06u.dat", f);
      t.inodes[dir].entries.emplace(name, ino);
    }
  };
  if (dirs == 0) {
    add_files(kRootIno);
  } else {
    char name[32];
    for (std::uint32_t d = 0; d < dirs; ++d) {
      const std::uint64_t dir = next++;
      InodeRecord& r = t.inodes[dir];
      r.mode = S_IFDIR | 0755;
      r.uid = r.gid = 1000;
      std::snprintf(name, sizeof name, "dir-%04u", d);
      t.inodes[kRootIno].entries.emplace(name, dir);
      add_files(dir);
    }
  }
  t.next_ino = next + 1000;
  return t;
}

std::uint64_t fnv1a(const Bytes& b) {
  std::uint64_t h = 1469598103934665603ull;
  for (const std::uint8_t c : b)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

struct Result {
  double best_ns;  // the fastest round: the least disturbed by other work on the machine
  double median_ns;
  std::size_t bytes;
  std::uint64_t checksum;
};

// Runs encode() in rounds of enough iterations to fill budget_ms / rounds each.
Result measure(const std::function<Bytes()>& encode, int rounds, int budget_ms) {
  using Clock = std::chrono::steady_clock;
  const Bytes first = encode();
  const auto t0 = Clock::now();
  encode();
  const double one_ns =
      std::max<double>(1.0, std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
  const auto iterations = static_cast<long>(std::max(1.0, budget_ms * 1e6 / rounds / one_ns));
  std::vector<double> per;
  std::size_t sink = 0;
  // Round -1 is not timed: it lets malloc settle its thresholds for buffers of this size.
  for (int r = -1; r < rounds; ++r) {
    const auto start = Clock::now();
    for (long i = 0; i < iterations; ++i)
      sink += encode().size();
    if (r >= 0) {
      per.push_back(std::chrono::duration<double, std::nano>(Clock::now() - start).count() /
                    static_cast<double>(iterations));
    }
  }
  std::sort(per.begin(), per.end());
  if (sink == 0)
    std::puts("");  // keeps the encodes observable
  return {per.front(), per[per.size() / 2], first.size(), fnv1a(first)};
}

void report(const char* what, const char* shape, const Result& r) {
  std::printf("%-16s %-8s %8zu bytes %10.0f ns/encode (median %10.0f) %7.1f MB/s  fnv %016llx\n",
              what, shape, r.bytes, r.best_ns, r.median_ns,
              static_cast<double>(r.bytes) / r.best_ns * 1e3,
              static_cast<unsigned long long>(r.checksum));
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 7;
  int budget_ms = 1400;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--rounds") == 0) {
      rounds = std::clamp(std::atoi(argv[i + 1]), 1, 101);
    } else if (std::strcmp(argv[i], "--budget-ms") == 0) {
      budget_ms = std::clamp(std::atoi(argv[i + 1]), 10, 600'000);
    } else {
      std::fprintf(stderr, "usage: %s [--rounds N] [--budget-ms MS]\n", argv[0]);
      return 2;
    }
  }
  struct Shape {
    const char* name;
    std::uint32_t dirs;
    std::uint32_t files;
  };
  for (const Shape& s :
       {Shape{"1x2000", 0, 2000}, Shape{"1x20000", 0, 20000}, Shape{"100x200", 100, 200}}) {
    const Tree tree = make_tree(s.dirs, s.files);
    report("encode_tree", s.name, measure([&] { return encode_tree(tree); }, rounds, budget_ms));

    // One inode in ten has content committed in an older version; one file in a hundred is
    // unlinked while still open, an orphan the snapshot leaves out.
    Namespace ns(tree);
    Committed committed;
    std::vector<std::pair<std::uint64_t, std::string>> victims;
    for (const auto& [ino, rec] : tree.inodes) {
      if (ino % 10 == 0)
        committed[ino] = {rec.size / 2, rec.content_version - 1};
      for (const auto& [name, child] : rec.entries) {
        if (child % 100 == 7)
          victims.emplace_back(ino, name);
      }
    }
    for (const auto& [dir, name] : victims) {
      std::uint64_t ino = 0;
      if (ns.lookup(dir, name, ino) == 0) {
        ns.add_open(ino);
        ns.unlink(dir, name, 1, ino);
      }
    }
    report("encode_snapshot", s.name,
           measure([&] { return ns.encode_snapshot(committed); }, rounds, budget_ms));
  }
  return 0;
}
