// Big-endian field writer and bounds-checked reader over byte spans, for the sans-I/O codecs.
// The writer can also only count, so an encoder learns a message's exact size, reserves it once
// and copies each blob once. The reader never reads past its input, never sizes an allocation from
// an unchecked count, and keeps the first failure; callers check the outcome once at the end
// instead of after every field.
#pragma once

#include <cassert>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::wire {

// A run of bytes a gathering writer left where it lies: it belongs at offset `at` of the writer's
// output (before the byte there).
struct Reference {
  std::size_t at = 0;
  ByteView bytes;
};

class Writer {
 public:
  // Writes nothing; size() tells how many bytes the same calls would append.
  Writer() = default;
  // Appends to `out`.
  explicit Writer(Bytes& out) : out_(&out) {}
  // Appends to `out`, but a run of at least kMinReferenceBytes is only referred to in `references`
  // (which must then outlive the caller's use of it): for a gathering write of large blobs.
  Writer(Bytes& out, std::vector<Reference>& references) : out_(&out), references_(&references) {}
  static constexpr std::size_t kMinReferenceBytes = 64u << 10;

  void u8(std::uint8_t v) { put_be<1>(v); }
  void u32(std::uint32_t v) { put_be<4>(v); }
  void u64(std::uint64_t v) { put_be<8>(v); }
  void raw(ByteView bytes) { put(bytes.data(), bytes.size()); }
  void id(const Id& id) { raw(id); }
  // A u32 length or count. Bounds are the reader's to enforce, but a length that does not fit the
  // field cannot be sent at all.
  void length(std::size_t n) {
    assert(n <= std::numeric_limits<std::uint32_t>::max());
    u32(static_cast<std::uint32_t>(n));
  }
  // u32 length, then the bytes.
  void blob(ByteView bytes) {
    length(bytes.size());
    raw(bytes);
  }
  void text(std::string_view s) { blob(as_bytes(s)); }
  // u32 count, then the ids back to back.
  void ids(std::span<const Id> ids) {
    length(ids.size());
    // Id is a plain byte array, so a span of ids is contiguous bytes.
    static_assert(sizeof(Id) == 32 && std::is_trivially_copyable_v<Id>);
    put(reinterpret_cast<const std::uint8_t*>(ids.data()), ids.size() * sizeof(Id));
  }
  // Bytes written, or counted, so far.
  std::size_t size() const { return size_; }

 private:
  void put(const std::uint8_t* data, std::size_t n) {
    size_ += n;
    if (references_ && n >= kMinReferenceBytes)
      references_->push_back({out_->size(), ByteView(data, n)});
    else if (out_)
      out_->insert(out_->end(), data, data + n);
  }
  // Fixed-size fields grow the buffer and fill it in place: a range insert of a few bytes trips a
  // false -Wstringop-overflow in GCC 12.
  template <std::size_t N>
  void put_be(std::uint64_t v) {
    size_ += N;
    if (!out_)
      return;
    const std::size_t at = out_->size();
    out_->resize(at + N);
    for (std::size_t i = 0; i < N; ++i)
      (*out_)[at + i] = static_cast<std::uint8_t>(v >> (8 * (N - 1 - i)));
  }
  Bytes* out_ = nullptr;
  std::vector<Reference>* references_ = nullptr;
  std::size_t size_ = 0;
};

class Reader {
 public:
  // `trailing` is never a field's failure: only outcome() reports it.
  enum class Failure { none, truncated, too_large, invalid, trailing };

  explicit Reader(ByteView in) : in_(in) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(get_be(1)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get_be(4)); }
  std::uint64_t u64() { return get_be(8); }
  // One byte that must be 0 or 1 (invalid otherwise).
  bool boolean() {
    const std::uint8_t b = u8();
    if (b > 1)
      fail(Failure::invalid);
    return b == 1;
  }
  // `n` raw bytes, as a view into the input (empty on failure).
  ByteView raw(std::size_t n) {
    if (!take(n))
      return {};
    return in_.subspan(pos_ - n, n);
  }
  // A u32 length of at most `max` (too_large otherwise); 0 on failure.
  std::uint32_t length(std::size_t max) {
    const std::uint32_t n = u32();
    if (n > max) {
      fail(Failure::too_large);
      return 0;
    }
    return n;
  }
  // A u32-length-prefixed byte string of at most `max` bytes.
  ByteView blob(std::size_t max) { return raw(length(max)); }
  // The same, also charged against `budget`, what is left for all the blobs of one message
  // (too_large when over, checked before the bytes themselves).
  ByteView blob(std::size_t max, std::size_t& budget) {
    const std::uint32_t n = length(max);
    if (n > budget) {
      fail(Failure::too_large);
      return {};
    }
    budget -= n;
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
  // A u32 count of at most `max` ids, then the ids back to back.
  std::vector<Id> ids(std::size_t max) {
    std::vector<Id> out(count(max, sizeof(Id)));
    ByteView b = raw(out.size() * sizeof(Id));
    if (!b.empty())
      std::memcpy(out.data(), b.data(), b.size());
    return out;
  }
  void fail(Failure f) {
    if (failure_ == Failure::none)
      failure_ = f;
    pos_ = in_.size();
  }
  std::size_t remaining() const { return in_.size() - pos_; }
  Failure failure() const { return failure_; }
  // The verdict on the whole input: the first failure, else trailing if input is left over.
  Failure outcome() const {
    if (failure_ == Failure::none && pos_ != in_.size())
      return Failure::trailing;
    return failure_;
  }
  // True when every field read so far was present and the input is used up exactly.
  bool done() const { return outcome() == Failure::none; }

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
