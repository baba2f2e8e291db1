// Pseudo-random test data: the same seed always gives the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>

#include "common/bytes.hpp"

namespace splitfs::testing {

inline Bytes random_bytes(std::size_t n, std::uint64_t seed = 7) {
  std::mt19937_64 rng(seed);
  Bytes out(n);
  for (auto& b : out)
    b = static_cast<std::uint8_t>(rng());
  return out;
}

}  // namespace splitfs::testing
