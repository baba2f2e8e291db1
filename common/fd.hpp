// An owned POSIX file descriptor, and whole-buffer reads and writes that retry short transfers
// and EINTR. Shared by every part that does file I/O without iostreams.
#pragma once

#include <cstddef>
#include <cstdint>

namespace splitfs {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Closes the descriptor, if any.
  void reset();
  // Gives up ownership without closing.
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

// False on an error or an early end of file.
bool read_fully(int fd, std::uint8_t* data, std::size_t size);
bool write_fully(int fd, const std::uint8_t* data, std::size_t size);

}  // namespace splitfs
