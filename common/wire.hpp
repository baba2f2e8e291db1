// Big-endian field writer and bounds-checked reader over byte spans, for the sans-I/O codecs.
// The reader never reads past its input and reports the first failure; callers check `ok()` once
// at the end instead of after every field.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "common/bytes.hpp"

namespace splitfs::wire {

class Writer {
 public:
  explicit Writer(Bytes& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u32(std::uint32_t v) { put_be(v, 4); }
  void u64(std::uint64_t v) { put_be(v, 8); }
  void raw(ByteView bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
  // u32 length, then the bytes.
  void blob(ByteView bytes) {
    u32(static_cast<std::uint32_t>(bytes.size()));
    raw(bytes);
  }
  void text(std::string_view s) { blob(as_bytes(s)); }

 private:
  void put_be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i)
      out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  Bytes& out_;
};

class Reader {
 public:
  enum class Failure { none, truncated, too_large, invalid };

  explicit Reader(ByteView in) : in_(in) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(get_be(1)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get_be(4)); }
  std::uint64_t u64() { return get_be(8); }
  // `n` raw bytes, as a view into the input (empty on failure).
  ByteView raw(std::size_t n) {
    if (!take(n))
      return {};
    return in_.subspan(pos_ - n, n);
  }
  // A u32-length-prefixed byte string of at most `max` bytes.
  ByteView blob(std::size_t max) {
    const std::uint32_t n = u32();
    if (failure_ != Failure::none)
      return {};
    if (n > max) {
      fail(Failure::too_large);
      return {};
    }
    return raw(n);
  }
  std::string text(std::size_t max) {
    ByteView b = blob(max);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
  }
  Id id() {
    Id out{};
    ByteView b = raw(out.size());
    if (!b.empty())
      std::memcpy(out.data(), b.data(), out.size());
    return out;
  }
  // A u32 count bounded by `max` and by what the remaining input could hold at `min_item_bytes`
  // per item, so a forged count never drives an allocation.
  std::uint32_t count(std::size_t max, std::size_t min_item_bytes) {
    const std::uint32_t n = u32();
    if (failure_ != Failure::none)
      return 0;
    if (n > max || (min_item_bytes > 0 && n > remaining() / min_item_bytes)) {
      fail(n > max ? Failure::too_large : Failure::truncated);
      return 0;
    }
    return n;
  }
  void fail(Failure f) {
    if (failure_ == Failure::none)
      failure_ = f;
    pos_ = in_.size();
  }
  std::size_t remaining() const { return in_.size() - pos_; }
  Failure failure() const { return failure_; }
  // True when every field read so far was present and the input is used up exactly.
  bool done() const { return failure_ == Failure::none && pos_ == in_.size(); }

 private:
  bool take(std::size_t n) {
    if (failure_ != Failure::none || n > remaining()) {
      fail(Failure::truncated);
      return false;
    }
    pos_ += n;
    return true;
  }
  std::uint64_t get_be(std::size_t n) {
    if (!take(n))
      return 0;
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i)
      v = v << 8 | in_[pos_ - n + i];
    return v;
  }
  ByteView in_;
  std::size_t pos_ = 0;
  Failure failure_ = Failure::none;
};

}  // namespace splitfs::wire
