// Sans-I/O encoding of requests, replies and TCP frames: pure functions over byte spans, shared by
// clients and servers. Decoders never trust a length: every count and size is checked against the
// bounds in messages.hpp before anything is allocated.
//
// Payload layout: big-endian integers; byte strings and lists carry a u32 length prefix; ids are
// 32 raw bytes; bools are one byte (0 or 1). A payload must be consumed exactly.
//
// TCP framing: request frame = u32 length | u8 op | payload; reply frame = u32 length | u8 status |
// payload, where length counts the op/status byte and the payload. The first request on a
// connection is Hello; a reply with status ok carries the reply payload for the request's op,
// otherwise an ErrorReply payload.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <system_error>

#include "protocol/messages.hpp"

namespace splitfs::protocol {

enum class DecodeErrc {
  truncated = 1,    // input ended inside a field
  trailing_bytes,   // input continues after the last field
  too_large,        // a count or size exceeds its bound
  unknown_op,       // op byte not in Op
  unknown_status,   // status byte not in Status
  invalid_value,    // e.g. a bool that is neither 0 nor 1
};
const std::error_category& decode_category();
std::error_code make_error_code(DecodeErrc e);

// Request payloads (without framing).
Bytes encode_request(const Request& request);
std::error_code decode_request(Op op, ByteView payload, Request& out);

// Reply payloads. A successful reply's layout depends on the request's op; an ErrorReply's payload
// is u8 status | message | missing ids, the same for every op.
Bytes encode_reply(const Reply& reply);
std::error_code decode_reply(Op op, ByteView payload, Reply& out);  // success payload for op
std::error_code decode_error(ByteView payload, ErrorReply& out);

// TCP frames.
inline constexpr std::size_t kFrameHeaderBytes = 5;
Bytes encode_request_frame(const Request& request);
Bytes encode_reply_frame(const Reply& reply);  // status taken from the reply (ok unless ErrorReply)

struct Frame {
  std::uint8_t kind = 0;  // op for requests, status for replies
  Bytes payload;
};

// Incremental frame splitter: feed bytes as they arrive, take whole frames out.
class FrameParser {
 public:
  explicit FrameParser(std::size_t max_frame_bytes = kMaxMessageBytes);
  // Appends received bytes. Returns an error (too_large) as soon as a header announces a frame over
  // the bound; the parser is then unusable and the connection should be closed.
  std::error_code feed(ByteView bytes);
  // The next complete frame, if any.
  std::optional<Frame> next();
  // Bytes buffered but not yet returned as frames.
  std::size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::size_t max_frame_bytes_;
  Bytes buffer_;
  std::size_t consumed_ = 0;
  bool failed_ = false;
};

// HTTP mapping used by the HTTPS door and its client:
//   GET /v1/hello -> hello               POST /v1/shares/has -> has_shares
//   POST /v1/shares -> put_shares        POST /v1/shares/get -> get_shares
//   PUT /v1/files/<hex> -> commit        GET /v1/files/<hex> -> get_file
//   GET /v1/files -> list_files          DELETE /v1/files/<hex> -> remove_file
//   GET /v1/files/<hex>/info -> file_info
// Requests whose fields are all in the target have an empty body; the others carry
// encode_request() (a commit's body id must equal the target's). Replies: HTTP 200 with the
// encode_reply() payload, or http_status(status) with an ErrorReply payload.
struct HttpRequest {
  std::string_view method;
  std::string target;
  Bytes body;
};
HttpRequest to_http(const Request& request);
std::error_code decode_http_request(std::string_view method, std::string_view target, ByteView body,
                                    Request& out);
unsigned http_status(Status status);

}  // namespace splitfs::protocol

template <>
struct std::is_error_code_enum<splitfs::protocol::DecodeErrc> : std::true_type {};
