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
//
// Encoders do not enforce the bounds (the peer's decoder does, so callers split their batches),
// except that an ErrorReply is always encoded decodable: its message is clipped to kMaxErrorText
// bytes (on a UTF-8 boundary), its missing ids to the first kMaxBatchItems, and a status of ok is
// sent as internal.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <optional>
#include <string_view>
#include <system_error>
#include <vector>

#include "common/wire.hpp"
#include "protocol/messages.hpp"

namespace splitfs::protocol {

enum class DecodeErrc {
  truncated = 1,   // input ended inside a field
  trailing_bytes,  // input continues after the last field
  too_large,       // a count or size exceeds its bound
  unknown_op,      // op byte not in Op
  unknown_status,  // status byte not in Status
  invalid_value,   // e.g. a bool that is neither 0 nor 1
};
const std::error_category& decode_category();
std::error_code make_error_code(DecodeErrc e);

// Request payloads (without framing).
Bytes encode_request(const Request& request);
// unknown_op for a value outside Op, so a received op byte may be cast to Op unchecked.
std::error_code decode_request(Op op, ByteView payload, Request& out);

// Reply payloads. A successful reply's layout depends on the request's op; an ErrorReply's payload
// is u8 status | message | missing ids, the same for every op.
Bytes encode_reply(const Reply& reply);
// The same into `out`, replacing what it held, in its memory when it has the room: a server
// answers into the memory its request came in (see FrameParser::recycle).
void encode_reply(const Reply& reply, Bytes& out);
std::error_code decode_reply(Op op, ByteView payload, Reply& out);  // success payload for op
std::error_code decode_error(ByteView payload, ErrorReply& out);    // invalid_value if status is ok

// ok for every reply but an ErrorReply; an ErrorReply's status (internal if it claims ok).
Status status_of(const Reply& reply);
// The status a server answers a request that failed to decode with: too_large, unsupported for an
// unknown op, bad_request otherwise.
Status status_for(std::error_code decode_error);

// TCP frames.
inline constexpr std::size_t kFrameHeaderBytes = 5;
Bytes encode_request_frame(const Request& request);
// A request encoded for a gathering write: its fields copied into `fields`, its large blobs (from
// wire::Writer::kMinReferenceBytes up) referred to where they lie in the request, which must
// outlive it unchanged. pieces() are the encoding's bytes in order: a batch of shares goes out
// without being copied into one buffer first.
struct Gathered {
  Bytes fields;
  std::vector<wire::Reference> references;
  std::vector<ByteView> pieces() const;
};
Gathered gather_request(const Request& request);        // encode_request()'s bytes
Gathered gather_request_frame(const Request& request);  // encode_request_frame()'s bytes
Bytes encode_reply_frame(const Reply& reply);  // status taken from the reply (ok unless ErrorReply)
void encode_reply_frame(const Reply& reply, Bytes& out);  // into `out`, as encode_reply(reply, out)

struct Frame {
  std::uint8_t kind = 0;  // op for requests, status for replies
  Bytes payload;
};

// Decodes a whole request frame (its kind is the op).
std::error_code decode_request_frame(const Frame& frame, Request& out);
// Decodes a whole reply frame to the request `op`: the success reply for status ok, otherwise the
// ErrorReply, whose status must equal the frame's (invalid_value if not).
std::error_code decode_reply_frame(Op op, const Frame& frame, Reply& out);

// Incremental frame splitter: feed bytes as they arrive (or receive them in place: prepare() and
// commit()), take whole frames out. A frame's payload is reserved once its header is in and filled
// as its bytes come: no byte is moved twice, and memory grows only with bytes received.
class FrameParser {
 public:
  // `max_frame_bytes` bounds a frame's length field (kind byte plus payload).
  explicit FrameParser(std::size_t max_frame_bytes = kMaxMessageBytes);
  // Appends received bytes. Returns an error as soon as a header announces a frame over the bound
  // (too_large) or of length 0 (invalid_value); the parser is then unusable (every later feed
  // returns the same error, next() returns nothing) and the connection should be closed.
  std::error_code feed(ByteView bytes);
  // Receiving in place: where up to `max` next bytes may be written (within the payload under way
  // when a large part of it is missing, else a scratch area), then commit(n) of the n written
  // there, which counts as feed() of them. Nothing else may come between the two calls.
  MutableByteView prepare(std::size_t max);
  std::error_code commit(std::size_t n);
  // The next complete frame, if any.
  std::optional<Frame> next();
  // Gives back the payload of a frame from next(), once done with: a later frame is received into
  // its memory, already mapped, rather than into fresh pages (a fault and a zeroed page for every
  // 4 KiB). One is kept, of at most kMaxSpareBytes capacity, so memory stays what a frame
  // received in full on this connection needed.
  void recycle(Bytes payload);
  static constexpr std::size_t kMaxSpareBytes = 16u << 20;
  // Bytes received but not yet returned as frames.
  std::size_t buffered() const { return buffered_; }
  // The length field (kind byte plus payload) of the frame under way, once its four bytes are in.
  std::optional<std::uint32_t> announced() const;
  // Bytes of the frame under way still to come, once its header is in; else 0.
  std::size_t missing() const { return in_payload_ ? payload_size_ - partial_.payload.size() : 0; }

 private:
  std::error_code take(ByteView bytes);
  void finish_if_complete();

  std::size_t max_frame_bytes_;
  std::array<std::uint8_t, kFrameHeaderBytes> header_{};
  std::size_t header_have_ = 0;
  bool in_payload_ = false;  // partial_ has its header; its payload fills up to its reserved size
  std::size_t payload_size_ = 0;
  Frame partial_;
  std::deque<Frame> ready_;
  std::size_t buffered_ = 0;
  Bytes scratch_;
  Bytes spare_;
  // Where the last prepare() pointed: the payload's size before it extended it, or nothing for
  // the scratch area.
  std::optional<std::size_t> prepared_at_;
  std::error_code error_;
};

// HTTP mapping used by the HTTPS door and its client:
//   GET /v1/hello -> hello               POST /v1/shares/has -> has_shares
//   POST /v1/shares -> put_shares        POST /v1/shares/get -> get_shares
//   PUT /v1/files/<hex> -> commit        GET /v1/files/<hex> -> get_file
//   GET /v1/files -> list_files          DELETE /v1/files/<hex> -> remove_file
//   GET /v1/files/<hex>/info -> file_info   GET /v1/stats -> stats
// Requests whose fields are all in the target have an empty body; the others carry
// encode_request() (a commit's body id must equal the target's; hello's body holds its version).
// Replies: HTTP 200 with the encode_reply() payload, or http_status(status) with an ErrorReply
// payload. Ids in targets are 64 hex digits (written lowercase). decode_http_request answers
// unknown_op for a path or method outside the table, invalid_value for a malformed id or a commit
// whose body id differs from the target's, and the payload errors for a bad body.
struct HttpRequest {
  std::string_view method;
  std::string target;
  Bytes body;
};
HttpRequest to_http(const Request& request);
// The same with the body gathered (encode_request()'s bytes), if the request has one.
struct GatheredHttpRequest {
  std::string_view method;
  std::string target;
  std::optional<Gathered> body;
};
GatheredHttpRequest gather_http(const Request& request);
std::error_code decode_http_request(std::string_view method, std::string_view target, ByteView body,
                                    Request& out);
unsigned http_status(Status status);
// Decodes an HTTP reply to the request `op`: 200 carries the success reply, anything else an
// ErrorReply whose status must map to that HTTP status (invalid_value if not).
std::error_code decode_http_reply(Op op, unsigned status, ByteView body, Reply& out);

}  // namespace splitfs::protocol

template <>
struct std::is_error_code_enum<splitfs::protocol::DecodeErrc> : std::true_type {};
