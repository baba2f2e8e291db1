// Byte vocabulary shared by every layer: owned buffers, views, 32-byte ids and hex text.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace splitfs {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;
using MutableByteView = std::span<std::uint8_t>;

// Opaque identifier of a share or a file on a server: a keyed hash computed by the client.
using Id = std::array<std::uint8_t, 32>;

std::string to_hex(ByteView bytes);
// Accepts lowercase or uppercase hex; nullopt for odd length or a non-hex digit.
std::optional<Bytes> from_hex(std::string_view text);
// Exactly 64 hex digits; nullopt otherwise.
std::optional<Id> id_from_hex(std::string_view text);

inline ByteView as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

}  // namespace splitfs
