// Pseudo-random test data: the same seed always gives the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>

#include "common/bytes.hpp"

namespace splitfs::testing {

inline Bytes random_bytes(std::size_t n, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  Bytes out(n);
  for (auto& b : out)
    b = static_cast<std::uint8_t>(rng());
  return out;
}

// The same bytes as text, for tests that keep file contents in strings.
inline std::string random_string(std::size_t n, std::uint64_t seed = 7) {
  const Bytes bytes = random_bytes(n, seed);
  return {bytes.begin(), bytes.end()};
}

}  // namespace splitfs::testing
