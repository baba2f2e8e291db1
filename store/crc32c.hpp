// CRC-32C (Castagnoli), the checksum of every pack record. Uses the SSE4.2 instruction when the CPU
// has it (three streams at once over long data) and a slice-by-8 table otherwise; both give
// identical results.
#pragma once

#include <cstdint>

#include "common/bytes.hpp"

namespace splitfs::store {

// Extends `crc` (a finished CRC of earlier bytes, 0 for none) over `data`:
// crc32c_extend(crc32c_extend(0, a), b) == crc32c_extend(0, a + b).
std::uint32_t crc32c_extend(std::uint32_t crc, ByteView data);

inline std::uint32_t crc32c(ByteView data) {
  return crc32c_extend(0, data);
}

// The table implementation, exposed so tests can hold the hardware path to it.
std::uint32_t crc32c_extend_portable(std::uint32_t crc, ByteView data);

}  // namespace splitfs::store
