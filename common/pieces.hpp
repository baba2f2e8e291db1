// A read position in a message held in pieces, for a body sent without joining its pieces first:
// what libcurl's read and seek callbacks of an upload need.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>

#include "common/bytes.hpp"

namespace splitfs {

class PieceReader {
 public:
  PieceReader() = default;
  // The pieces must outlive the reader.
  explicit PieceReader(std::span<const ByteView> pieces) : pieces_(pieces) {}

  // Copies up to `room` next bytes to `out`; how many (0 at the end).
  std::size_t read(std::uint8_t* out, std::size_t room) {
    std::size_t written = 0;
    while (written < room && piece_ < pieces_.size()) {
      const ByteView piece = pieces_[piece_];
      const std::size_t n = std::min(room - written, piece.size() - offset_);
      if (n > 0)  // an empty piece may have no storage at all
        std::memcpy(out + written, piece.data() + offset_, n);
      written += n;
      offset_ += n;
      if (offset_ == piece.size()) {
        ++piece_;
        offset_ = 0;
      }
    }
    return written;
  }

  // Moves to `offset` bytes from the start; false (and nowhere valid) past the end.
  bool seek(std::uint64_t offset) {
    piece_ = 0;
    offset_ = 0;
    while (piece_ < pieces_.size() && offset >= pieces_[piece_].size()) {
      offset -= pieces_[piece_].size();
      ++piece_;
    }
    if (piece_ == pieces_.size() && offset > 0)
      return false;
    offset_ = static_cast<std::size_t>(offset);
    return true;
  }

  std::uint64_t size() const {
    std::uint64_t total = 0;
    for (const ByteView piece : pieces_)
      total += piece.size();
    return total;
  }

 private:
  std::span<const ByteView> pieces_;
  std::size_t piece_ = 0;
  std::size_t offset_ = 0;
};

}  // namespace splitfs
