// libFuzzer target: the TCP door's framing and message decoding, both ways. The input is fed to a
// FrameParser in pieces (the first byte picks the piece size, so split headers are covered, and
// whether they are fed or received in place, up to 64 KiB at a time); every
// whole frame is decoded as a request, as a reply to each op, and what decodes must re-encode to
// a frame that decodes to the same message.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "protocol/codec.hpp"

namespace {

using namespace splitfs;
using namespace splitfs::protocol;

// Small enough that oversize frames are reached quickly, large enough for real messages.
constexpr std::size_t kFrameBound = 1u << 20;
// Beyond the last op, so ops added later are covered (unknown ones just fail to decode).
constexpr std::uint8_t kOps = 16;

void check(bool holds) {
  if (!holds)
    std::abort();
}

void round_trip_request(const Frame& frame) {
  Request request;
  if (decode_request_frame(frame, request))
    return;
  check(op_of(request) == static_cast<Op>(frame.kind));
  const Bytes again = encode_request_frame(request);
  FrameParser parser(again.size());
  check(!parser.feed(again));
  const auto reparsed = parser.next();
  check(reparsed.has_value());
  Request decoded;
  check(!decode_request_frame(*reparsed, decoded));
  check(decoded == request);
}

void round_trip_reply(const Frame& frame) {
  for (std::uint8_t op = 1; op <= kOps; ++op) {
    Reply reply;
    if (decode_reply_frame(static_cast<Op>(op), frame, reply))
      continue;
    const Bytes again = encode_reply_frame(reply);
    FrameParser parser(again.size());
    check(!parser.feed(again));
    const auto reparsed = parser.next();
    check(reparsed.has_value());
    Reply decoded;
    check(!decode_reply_frame(static_cast<Op>(op), *reparsed, decoded));
    check(decoded == reply);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0)
    return 0;
  const bool in_place = (data[0] & 0x80) != 0;
  const std::size_t piece = 1 + std::size_t{data[0] & 0x3fu} * (in_place ? 1024 : 1);
  ByteView input(data + 1, size - 1);
  FrameParser parser(kFrameBound);
  while (!input.empty()) {
    std::size_t n = std::min(piece, input.size());
    std::error_code error;
    if (in_place) {
      const MutableByteView space = parser.prepare(piece);
      check(!space.empty() && space.size() <= piece);
      n = std::min(n, space.size());
      std::copy_n(input.begin(), n, space.begin());
      error = parser.commit(n);
    } else {
      error = parser.feed(input.first(n));
    }
    if (error) {
      check(!parser.next().has_value());
      return 0;
    }
    input = input.subspan(n);
    while (auto frame = parser.next()) {
      check(frame->payload.size() + 1 <= kFrameBound);
      round_trip_request(*frame);
      round_trip_reply(*frame);
    }
  }
  check(parser.buffered() < kFrameBound + kFrameHeaderBytes);
  return 0;
}
