#include "store/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace splitfs::store {

namespace {

constexpr std::uint32_t kPolynomial = 0x82f63b78;  // reflected Castagnoli polynomial

using Tables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr Tables make_tables() {
  Tables t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? (c >> 1) ^ kPolynomial : c >> 1;
    t[0][i] = c;
  }
  for (std::size_t n = 1; n < 8; ++n) {
    for (std::size_t i = 0; i < 256; ++i)
      t[n][i] = (t[n - 1][i] >> 8) ^ t[0][t[n - 1][i] & 0xff];
  }
  return t;
}

constexpr Tables kTables = make_tables();

std::uint64_t load_le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

#if defined(__x86_64__)
// The CRC instruction takes three cycles and can start one every cycle: three streams over
// consecutive blocks keep it busy, and are joined through the register's linear map over a
// block of zeros (crc(x, A | B) = zeros(crc(x, A), |B|) ^ crc(0, B)).
constexpr std::size_t kStreamBytes = 2048;

using ShiftTables = std::array<std::array<std::uint32_t, 256>, 4>;

// zeros(x, kStreamBytes) as a table per byte of x.
constexpr ShiftTables make_shift_tables() {
  std::array<std::uint32_t, 32> basis{};
  for (std::size_t bit = 0; bit < 32; ++bit) {
    std::uint32_t c = std::uint32_t{1} << bit;
    for (std::size_t i = 0; i < kStreamBytes; ++i)
      c = (c >> 8) ^ kTables[0][c & 0xff];
    basis[bit] = c;
  }
  ShiftTables t{};
  for (std::size_t k = 0; k < 4; ++k) {
    for (std::size_t b = 0; b < 256; ++b) {
      std::uint32_t v = 0;
      for (std::size_t bit = 0; bit < 8; ++bit) {
        if ((b >> bit) & 1)
          v ^= basis[(8 * k) + bit];
      }
      t[k][b] = v;
    }
  }
  return t;
}

constexpr ShiftTables kShift = make_shift_tables();

std::uint32_t past_stream(std::uint32_t c) {
  return kShift[0][c & 0xff] ^ kShift[1][(c >> 8) & 0xff] ^ kShift[2][(c >> 16) & 0xff] ^
         kShift[3][c >> 24];
}

__attribute__((target("sse4.2"))) std::uint32_t extend_hardware(std::uint32_t crc, ByteView data) {
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  std::uint64_t c = ~crc;
  auto word = [](const std::uint8_t* at) {
    std::uint64_t w;
    std::memcpy(&w, at, 8);
    return w;
  };
  while (n >= 3 * kStreamBytes) {
    std::uint64_t c1 = 0;
    std::uint64_t c2 = 0;
    for (std::size_t i = 0; i < kStreamBytes; i += 8) {
      c = _mm_crc32_u64(c, word(p + i));
      c1 = _mm_crc32_u64(c1, word(p + kStreamBytes + i));
      c2 = _mm_crc32_u64(c2, word(p + (2 * kStreamBytes) + i));
    }
    c = past_stream(past_stream(static_cast<std::uint32_t>(c)) ^ static_cast<std::uint32_t>(c1)) ^
        static_cast<std::uint32_t>(c2);
    p += 3 * kStreamBytes;
    n -= 3 * kStreamBytes;
  }
  while (n >= 8) {
    c = _mm_crc32_u64(c, word(p));
    p += 8;
    n -= 8;
  }
  auto c32 = static_cast<std::uint32_t>(c);
  while (n-- > 0)
    c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

bool have_hardware() {
  static const bool have = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return have;
}
#endif

}  // namespace

std::uint32_t crc32c_extend_portable(std::uint32_t crc, ByteView data) {
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  std::uint32_t c = ~crc;
  while (n >= 8) {
    std::uint64_t v = load_le64(p) ^ c;
    c = kTables[7][v & 0xff] ^ kTables[6][(v >> 8) & 0xff] ^ kTables[5][(v >> 16) & 0xff] ^
        kTables[4][(v >> 24) & 0xff] ^ kTables[3][(v >> 32) & 0xff] ^ kTables[2][(v >> 40) & 0xff] ^
        kTables[1][(v >> 48) & 0xff] ^ kTables[0][v >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0)
    c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
  return ~c;
}

std::uint32_t crc32c_extend(std::uint32_t crc, ByteView data) {
#if defined(__x86_64__)
  if (have_hardware())
    return extend_hardware(crc, data);
#endif
  return crc32c_extend_portable(crc, data);
}

}  // namespace splitfs::store
