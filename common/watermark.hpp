// How many bytes a reader of a TLS stream lets its socket gather before it wakes.
#pragma once

#include <algorithm>
#include <boost/system/error_code.hpp>
#include <cstddef>

namespace splitfs {

// The receive low watermark (SO_RCVLOWAT) for a read when `rest` more bytes of a message are
// still to come (0: unknown). Without one, a reader that keeps up with its peer wakes for every
// TLS record of 16 KiB, a sleep and a wake-up each; with one, once a good part of the rest is in.
// TLS holds some of the rest already (records read but not yet asked for), so the mark stays well
// below the rest: the peer sends a message whole, so that much is always on its way.
inline int receive_watermark(std::size_t rest) {
  constexpr std::size_t kHeld = 128u << 10;
  constexpr std::size_t kMost = 256u << 10;
  return rest > kHeld + kMost / 2 ? static_cast<int>(std::min(rest - kHeld, kMost)) : 1;
}

// Sets an asio socket's receive_watermark() for `rest`, unless `current` (what it was last set
// to; 1, the system's, on a new socket) says it is set already.
template <class Socket>
void set_receive_watermark(Socket& socket, std::size_t rest, int& current) {
  const int watermark = receive_watermark(rest);
  if (watermark == current)
    return;
  boost::system::error_code ec;
  socket.set_option(typename Socket::receive_low_watermark(watermark), ec);
  if (!ec)
    current = watermark;
}

}  // namespace splitfs
