// A source in memory that counts the bytes read from it, to see what a scan reads (again).
#pragma once

#include <atomic>
#include <cstdint>

#include "scan/scan.hpp"

namespace splitfs::testing {

class CountingSource : public scan::Source {
 public:
  explicit CountingSource(ByteView bytes) : memory_(bytes) {}
  std::uint64_t size() const override { return memory_.size(); }
  std::size_t read_at(std::uint64_t offset, MutableByteView out) override {
    const std::size_t n = memory_.read_at(offset, out);
    read_ += n;
    return n;
  }
  bool concurrent_reads() const override { return true; }
  std::uint64_t read() const { return read_; }

 private:
  scan::MemorySource memory_;
  std::atomic<std::uint64_t> read_{0};
};

}  // namespace splitfs::testing
