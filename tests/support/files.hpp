// Whole files read and written in one call, byte for byte, for the tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace splitfs::testing {

// The file's bytes; empty if it cannot be opened.
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The same, as bytes (splitfs::Bytes).
inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Makes the file hold exactly `data`, created or truncated; throws std::runtime_error if it
// cannot be opened or written.
inline void write_file(const std::filesystem::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.flush();
  if (!out)
    throw std::runtime_error("cannot write " + path.string());
}

// The same from bytes (splitfs::Bytes or ByteView).
inline void write_file(const std::filesystem::path& path, std::span<const std::uint8_t> data) {
  write_file(path, std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

}  // namespace splitfs::testing
