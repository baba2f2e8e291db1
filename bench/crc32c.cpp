// Micro benchmark of the checksum the servers compute over every share they store and check over
// every share they read: crc32c() (the SSE4.2 instruction when the CPU has it) and the portable
// table, over buffers the size of a share (32 KiB), a small one and a large one. Prints GB/s (the
// best of a few rounds) and the checksums, which must agree. Calls on the small buffer overlap in
// the CPU (each is a chain of its own), so its figure flatters.
//
//   bench_crc32c
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>

#include "store/crc32c.hpp"

namespace {

using splitfs::Bytes;
using splitfs::ByteView;

template <class F>
double best_gbps(ByteView data, F&& checksum) {
  const std::size_t per_round = std::max<std::size_t>(1, (256u << 20) / data.size());
  double best = 0;
  volatile std::uint32_t sink = 0;
  for (int round = 0; round < 5; ++round) {
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < per_round; ++i)
      sink = sink ^ checksum(data);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(data.size() * per_round) / seconds / 1e9);
  }
  return best;
}

}  // namespace

int main() {
  std::mt19937_64 rng(1);
  Bytes data(4u << 20);
  for (auto& b : data)
    b = static_cast<std::uint8_t>(rng());
  std::printf("%10s  %14s  %14s  %s\n", "bytes", "crc32c GB/s", "portable GB/s", "checksums");
  for (const std::size_t size : {std::size_t{1} << 10, std::size_t{32} << 10, data.size()}) {
    const ByteView part = ByteView(data).first(size);
    const double fast = best_gbps(part, [](ByteView d) { return splitfs::store::crc32c(d); });
    const double portable =
        best_gbps(part, [](ByteView d) { return splitfs::store::crc32c_extend_portable(0, d); });
    const std::uint32_t a = splitfs::store::crc32c(part);
    const std::uint32_t b = splitfs::store::crc32c_extend_portable(0, part);
    std::printf("%10zu  %14.2f  %14.2f  %08x %s\n", size, fast, portable, a,
                a == b ? "(agree)" : "(DIFFER)");
  }
  return 0;
}
