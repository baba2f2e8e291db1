#include "protocol/codec.hpp"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <variant>

namespace splitfs::protocol {

namespace {

// ---- error category -------------------------------------------------------------------------

class DecodeCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "splitfs-protocol"; }
  std::string message(int value) const override {
    switch (static_cast<DecodeErrc>(value)) {
      case DecodeErrc::truncated:
        return "message truncated: input ended inside a field";
      case DecodeErrc::trailing_bytes:
        return "message has unexpected bytes after its last field";
      case DecodeErrc::too_large:
        return "message field exceeds its size or count bound";
      case DecodeErrc::unknown_op:
        return "unknown operation";
      case DecodeErrc::unknown_status:
        return "unknown reply status";
      case DecodeErrc::invalid_value:
        return "message field has an invalid value";
    }
    return "unknown protocol decode error";
  }
};

constexpr std::uint8_t kMaxStatus = static_cast<std::uint8_t>(Status::internal);

// ---- encoding -------------------------------------------------------------------------------
//
// Every message is written twice through the same code: once into a counter to learn its exact
// size, then into a buffer reserved to that size, so a 32 MiB batch is allocated once and each blob
// is copied once.

class SizeSink {
 public:
  void put(const std::uint8_t*, std::size_t n) { size_ += n; }
  std::size_t size() const { return size_; }

 private:
  std::size_t size_ = 0;
};

class ByteSink {
 public:
  explicit ByteSink(Bytes& out) : out_(out) {}
  void put(const std::uint8_t* data, std::size_t n) { out_.insert(out_.end(), data, data + n); }

 private:
  Bytes& out_;
};

template <class Sink>
void put_u8(Sink& sink, std::uint8_t value) {
  sink.put(&value, 1);
}

template <class Sink>
void put_u32(Sink& sink, std::uint32_t value) {
  const std::uint8_t b[4] = {
      static_cast<std::uint8_t>(value >> 24), static_cast<std::uint8_t>(value >> 16),
      static_cast<std::uint8_t>(value >> 8), static_cast<std::uint8_t>(value)};
  sink.put(b, sizeof b);
}

template <class Sink>
void put_u64(Sink& sink, std::uint64_t value) {
  std::uint8_t b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = static_cast<std::uint8_t>(value >> (56 - 8 * i));
  sink.put(b, sizeof b);
}

template <class Sink>
void put_length(Sink& sink, std::size_t n) {
  // Bounds are the peer's to enforce, but a length that does not fit the field cannot be sent.
  assert(n <= std::numeric_limits<std::uint32_t>::max());
  put_u32(sink, static_cast<std::uint32_t>(n));
}

template <class Sink>
void put_id(Sink& sink, const Id& id) {
  sink.put(id.data(), id.size());
}

template <class Sink>
void put_blob(Sink& sink, ByteView data) {
  put_length(sink, data.size());
  sink.put(data.data(), data.size());
}

template <class Sink>
void put_ids(Sink& sink, std::span<const Id> ids) {
  put_length(sink, ids.size());
  // Id is a plain byte array, so a span of ids is contiguous bytes.
  static_assert(sizeof(Id) == 32 && std::is_trivially_copyable_v<Id>);
  sink.put(reinterpret_cast<const std::uint8_t*>(ids.data()), ids.size() * sizeof(Id));
}

template <class Sink>
void write(Sink& sink, const Hello& m) {
  put_u32(sink, m.version);
}
template <class Sink>
void write(Sink& sink, const HasShares& m) {
  put_ids(sink, m.ids);
}
template <class Sink>
void write(Sink& sink, const PutShares& m) {
  put_length(sink, m.shares.size());
  for (const ShareBlob& share : m.shares) {
    put_id(sink, share.id);
    put_blob(sink, share.data);
  }
}
template <class Sink>
void write(Sink& sink, const GetShares& m) {
  put_ids(sink, m.ids);
}
template <class Sink>
void write(Sink& sink, const Commit& m) {
  put_id(sink, m.file);
  put_u64(sink, m.version);
  put_length(sink, m.refs.size());
  for (const ShareRef& ref : m.refs) {
    put_id(sink, ref.id);
    put_u32(sink, ref.chunks);
  }
  put_blob(sink, m.entry);
  put_blob(sink, m.manifest);
}
template <class Sink>
void write(Sink& sink, const GetFile& m) {
  put_id(sink, m.file);
}
template <class Sink>
void write(Sink&, const ListFiles&) {}
template <class Sink>
void write(Sink& sink, const RemoveFile& m) {
  put_id(sink, m.file);
}
template <class Sink>
void write(Sink& sink, const GetFileInfo& m) {
  put_id(sink, m.file);
}

template <class Sink>
void write(Sink&, const Empty&) {}
template <class Sink>
void write(Sink& sink, const Presence& m) {
  put_length(sink, m.present.size());
  for (bool flag : m.present)
    put_u8(sink, flag ? 1 : 0);
}
template <class Sink>
void write(Sink& sink, const Shares& m) {
  put_length(sink, m.blobs.size());
  for (const Bytes& blob : m.blobs)
    put_blob(sink, blob);
}
template <class Sink>
void write(Sink& sink, const FileRecord& m) {
  put_u64(sink, m.version);
  put_blob(sink, m.entry);
  put_blob(sink, m.manifest);
}
template <class Sink>
void write(Sink& sink, const FileList& m) {
  put_length(sink, m.files.size());
  for (const FileListItem& item : m.files) {
    put_id(sink, item.file);
    put_u64(sink, item.version);
    put_blob(sink, item.entry);
  }
}
template <class Sink>
void write(Sink& sink, const FileInfo& m) {
  put_u64(sink, m.version);
  put_u64(sink, m.shares);
  put_u64(sink, m.chunks);
  put_u64(sink, m.stored_bytes);
}

// Cuts at most kMaxErrorText bytes without splitting a UTF-8 sequence.
std::string_view clip_message(std::string_view text) {
  if (text.size() <= kMaxErrorText)
    return text;
  std::size_t n = kMaxErrorText;
  while (n > 0 && (static_cast<std::uint8_t>(text[n]) & 0xC0) == 0x80)
    --n;
  return text.substr(0, n);
}

template <class Sink>
void write(Sink& sink, const ErrorReply& m) {
  put_u8(sink, static_cast<std::uint8_t>(m.status == Status::ok ? Status::internal : m.status));
  put_blob(sink, as_bytes(clip_message(m.message)));
  std::span<const Id> missing = m.missing;
  put_ids(sink, missing.first(std::min(missing.size(), kMaxBatchItems)));
}

template <class Sink, class Variant>
void write_variant(Sink& sink, const Variant& message) {
  std::visit([&sink](const auto& m) { write(sink, m); }, message);
}

// Encodes `message` after an optional frame header carrying `kind`, with a single allocation.
template <class Variant>
Bytes encode(const Variant& message, std::optional<std::uint8_t> frame_kind) {
  SizeSink size;
  write_variant(size, message);
  const std::size_t header = frame_kind ? kFrameHeaderBytes : 0;
  Bytes out;
  out.reserve(header + size.size());
  ByteSink sink(out);
  if (frame_kind) {
    put_length(sink, size.size() + 1);
    put_u8(sink, *frame_kind);
  }
  write_variant(sink, message);
  assert(out.size() == header + size.size());
  return out;
}

// ---- decoding -------------------------------------------------------------------------------

class Reader {
 public:
  explicit Reader(ByteView in) : in_(in) {}

  std::size_t remaining() const { return in_.size() - pos_; }

  std::error_code u8(std::uint8_t& out) {
    if (remaining() < 1)
      return DecodeErrc::truncated;
    out = in_[pos_++];
    return {};
  }
  std::error_code u32(std::uint32_t& out) {
    if (remaining() < 4)
      return DecodeErrc::truncated;
    const std::uint8_t* p = in_.data() + pos_;
    out = std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
    pos_ += 4;
    return {};
  }
  std::error_code u64(std::uint64_t& out) {
    if (remaining() < 8)
      return DecodeErrc::truncated;
    out = 0;
    for (std::size_t i = 0; i < 8; ++i)
      out = out << 8 | in_[pos_ + i];
    pos_ += 8;
    return {};
  }
  std::error_code boolean(bool& out) {
    std::uint8_t b = 0;
    if (auto ec = u8(b))
      return ec;
    if (b > 1)
      return DecodeErrc::invalid_value;
    out = b == 1;
    return {};
  }
  std::error_code id(Id& out) {
    if (remaining() < out.size())
      return DecodeErrc::truncated;
    std::memcpy(out.data(), in_.data() + pos_, out.size());
    pos_ += out.size();
    return {};
  }
  // A list count: at most `max`, and small enough that `count` items of at least `min_item_bytes`
  // each fit in what is left, so reserving `count` items never exceeds the input's own size.
  std::error_code count(std::size_t& out, std::size_t max, std::size_t min_item_bytes) {
    std::uint32_t n = 0;
    if (auto ec = u32(n))
      return ec;
    if (n > max)
      return DecodeErrc::too_large;
    if (n * min_item_bytes > remaining())
      return DecodeErrc::truncated;
    out = n;
    return {};
  }
  // A byte string of at most `max` bytes; when `budget` is given, also charged against it.
  std::error_code length(std::size_t& out, std::size_t max, std::size_t* budget = nullptr) {
    std::uint32_t n = 0;
    if (auto ec = u32(n))
      return ec;
    if (n > max)
      return DecodeErrc::too_large;
    if (budget) {
      if (n > *budget)
        return DecodeErrc::too_large;
      *budget -= n;
    }
    if (n > remaining())
      return DecodeErrc::truncated;
    out = n;
    return {};
  }
  std::error_code blob(Bytes& out, std::size_t max, std::size_t* budget = nullptr) {
    std::size_t n = 0;
    if (auto ec = length(n, max, budget))
      return ec;
    out.assign(in_.begin() + pos_, in_.begin() + pos_ + n);
    pos_ += n;
    return {};
  }
  std::error_code text(std::string& out, std::size_t max) {
    std::size_t n = 0;
    if (auto ec = length(n, max))
      return ec;
    out.assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return {};
  }
  std::error_code ids(std::vector<Id>& out, std::size_t max) {
    std::size_t n = 0;
    if (auto ec = count(n, max, sizeof(Id)))
      return ec;
    out.resize(n);
    if (n > 0)
      std::memcpy(out.data(), in_.data() + pos_, n * sizeof(Id));
    pos_ += n * sizeof(Id);
    return {};
  }
  std::error_code finish() const {
    return remaining() == 0 ? std::error_code{} : make_error_code(DecodeErrc::trailing_bytes);
  }

 private:
  ByteView in_;
  std::size_t pos_ = 0;
};

std::error_code read(Reader& r, Hello& m) {
  return r.u32(m.version);
}
std::error_code read(Reader& r, HasShares& m) {
  return r.ids(m.ids, kMaxBatchItems);
}
std::error_code read(Reader& r, PutShares& m) {
  std::size_t n = 0;
  if (auto ec = r.count(n, kMaxBatchItems, sizeof(Id) + 4))
    return ec;
  m.shares.resize(n);
  std::size_t budget = kMaxBatchBytes;
  for (ShareBlob& share : m.shares) {
    if (auto ec = r.id(share.id))
      return ec;
    if (auto ec = r.blob(share.data, kMaxShareBytes, &budget))
      return ec;
  }
  return {};
}
std::error_code read(Reader& r, GetShares& m) {
  return r.ids(m.ids, kMaxBatchItems);
}
std::error_code read(Reader& r, Commit& m) {
  if (auto ec = r.id(m.file))
    return ec;
  if (auto ec = r.u64(m.version))
    return ec;
  std::size_t n = 0;
  if (auto ec = r.count(n, kMaxRefs, sizeof(Id) + 4))
    return ec;
  m.refs.resize(n);
  for (ShareRef& ref : m.refs) {
    if (auto ec = r.id(ref.id))
      return ec;
    if (auto ec = r.u32(ref.chunks))
      return ec;
  }
  if (auto ec = r.blob(m.entry, kMaxEntryBytes))
    return ec;
  return r.blob(m.manifest, kMaxManifestBytes);
}
std::error_code read(Reader& r, GetFile& m) {
  return r.id(m.file);
}
std::error_code read(Reader&, ListFiles&) {
  return {};
}
std::error_code read(Reader& r, RemoveFile& m) {
  return r.id(m.file);
}
std::error_code read(Reader& r, GetFileInfo& m) {
  return r.id(m.file);
}

std::error_code read(Reader&, Empty&) {
  return {};
}
std::error_code read(Reader& r, Presence& m) {
  std::size_t n = 0;
  if (auto ec = r.count(n, kMaxBatchItems, 1))
    return ec;
  m.present.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    bool flag = false;
    if (auto ec = r.boolean(flag))
      return ec;
    m.present[i] = flag;
  }
  return {};
}
std::error_code read(Reader& r, Shares& m) {
  std::size_t n = 0;
  if (auto ec = r.count(n, kMaxBatchItems, 4))
    return ec;
  m.blobs.resize(n);
  std::size_t budget = kMaxBatchBytes;
  for (Bytes& blob : m.blobs) {
    if (auto ec = r.blob(blob, kMaxShareBytes, &budget))
      return ec;
  }
  return {};
}
std::error_code read(Reader& r, FileRecord& m) {
  if (auto ec = r.u64(m.version))
    return ec;
  if (auto ec = r.blob(m.entry, kMaxEntryBytes))
    return ec;
  return r.blob(m.manifest, kMaxManifestBytes);
}
std::error_code read(Reader& r, FileList& m) {
  std::size_t n = 0;
  if (auto ec = r.count(n, kMaxListItems, sizeof(Id) + 8 + 4))
    return ec;
  m.files.resize(n);
  for (FileListItem& item : m.files) {
    if (auto ec = r.id(item.file))
      return ec;
    if (auto ec = r.u64(item.version))
      return ec;
    if (auto ec = r.blob(item.entry, kMaxEntryBytes))
      return ec;
  }
  return {};
}
std::error_code read(Reader& r, FileInfo& m) {
  if (auto ec = r.u64(m.version))
    return ec;
  if (auto ec = r.u64(m.shares))
    return ec;
  if (auto ec = r.u64(m.chunks))
    return ec;
  return r.u64(m.stored_bytes);
}
std::error_code read(Reader& r, ErrorReply& m) {
  std::uint8_t status = 0;
  if (auto ec = r.u8(status))
    return ec;
  if (status > kMaxStatus)
    return DecodeErrc::unknown_status;
  if (status == static_cast<std::uint8_t>(Status::ok))
    return DecodeErrc::invalid_value;
  m.status = static_cast<Status>(status);
  if (auto ec = r.text(m.message, kMaxErrorText))
    return ec;
  return r.ids(m.missing, kMaxBatchItems);
}

// Decodes `payload` as exactly one T and stores it in `out` only on success.
template <class T, class Variant>
std::error_code decode_as(ByteView payload, Variant& out) {
  Reader reader(payload);
  T message;
  if (auto ec = read(reader, message))
    return ec;
  if (auto ec = reader.finish())
    return ec;
  out = std::move(message);
  return {};
}

}  // namespace

const std::error_category& decode_category() {
  static const DecodeCategory category;
  return category;
}

std::error_code make_error_code(DecodeErrc e) {
  return {static_cast<int>(e), decode_category()};
}

Op op_of(const Request& request) {
  struct Visitor {
    Op operator()(const Hello&) const { return Op::hello; }
    Op operator()(const HasShares&) const { return Op::has_shares; }
    Op operator()(const PutShares&) const { return Op::put_shares; }
    Op operator()(const GetShares&) const { return Op::get_shares; }
    Op operator()(const Commit&) const { return Op::commit; }
    Op operator()(const GetFile&) const { return Op::get_file; }
    Op operator()(const ListFiles&) const { return Op::list_files; }
    Op operator()(const RemoveFile&) const { return Op::remove_file; }
    Op operator()(const GetFileInfo&) const { return Op::file_info; }
  };
  return std::visit(Visitor{}, request);
}

Status status_of(const Reply& reply) {
  const auto* error = std::get_if<ErrorReply>(&reply);
  if (!error)
    return Status::ok;
  return error->status == Status::ok ? Status::internal : error->status;
}

Status status_for(std::error_code decode_error) {
  if (decode_error == DecodeErrc::too_large)
    return Status::too_large;
  if (decode_error == DecodeErrc::unknown_op)
    return Status::unsupported;
  return Status::bad_request;
}

Bytes encode_request(const Request& request) {
  return encode(request, std::nullopt);
}

std::error_code decode_request(Op op, ByteView payload, Request& out) {
  switch (op) {
    case Op::hello:
      return decode_as<Hello>(payload, out);
    case Op::has_shares:
      return decode_as<HasShares>(payload, out);
    case Op::put_shares:
      return decode_as<PutShares>(payload, out);
    case Op::get_shares:
      return decode_as<GetShares>(payload, out);
    case Op::commit:
      return decode_as<Commit>(payload, out);
    case Op::get_file:
      return decode_as<GetFile>(payload, out);
    case Op::list_files:
      return decode_as<ListFiles>(payload, out);
    case Op::remove_file:
      return decode_as<RemoveFile>(payload, out);
    case Op::file_info:
      return decode_as<GetFileInfo>(payload, out);
  }
  return DecodeErrc::unknown_op;
}

Bytes encode_reply(const Reply& reply) {
  return encode(reply, std::nullopt);
}

std::error_code decode_reply(Op op, ByteView payload, Reply& out) {
  switch (op) {
    case Op::hello:
    case Op::put_shares:
    case Op::commit:
    case Op::remove_file:
      return decode_as<Empty>(payload, out);
    case Op::has_shares:
      return decode_as<Presence>(payload, out);
    case Op::get_shares:
      return decode_as<Shares>(payload, out);
    case Op::get_file:
      return decode_as<FileRecord>(payload, out);
    case Op::list_files:
      return decode_as<FileList>(payload, out);
    case Op::file_info:
      return decode_as<FileInfo>(payload, out);
  }
  return DecodeErrc::unknown_op;
}

std::error_code decode_error(ByteView payload, ErrorReply& out) {
  return decode_as<ErrorReply>(payload, out);
}

Bytes encode_request_frame(const Request& request) {
  return encode(request, static_cast<std::uint8_t>(op_of(request)));
}

Bytes encode_reply_frame(const Reply& reply) {
  return encode(reply, static_cast<std::uint8_t>(status_of(reply)));
}

std::error_code decode_request_frame(const Frame& frame, Request& out) {
  return decode_request(static_cast<Op>(frame.kind), frame.payload, out);
}

std::error_code decode_reply_frame(Op op, const Frame& frame, Reply& out) {
  if (frame.kind == static_cast<std::uint8_t>(Status::ok))
    return decode_reply(op, frame.payload, out);
  if (frame.kind > kMaxStatus)
    return DecodeErrc::unknown_status;
  ErrorReply error;
  if (auto ec = decode_error(frame.payload, error))
    return ec;
  if (static_cast<std::uint8_t>(error.status) != frame.kind)
    return DecodeErrc::invalid_value;
  out = std::move(error);
  return {};
}

// ---- frame parser ---------------------------------------------------------------------------

namespace {
// A drained buffer larger than this is released, so one large transfer does not pin its memory
// for the rest of a long-lived connection.
constexpr std::size_t kKeepCapacityBytes = 1u << 20;

std::uint32_t load_u32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
}  // namespace

FrameParser::FrameParser(std::size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

std::error_code FrameParser::feed(ByteView bytes) {
  if (error_)
    return error_;
  compact();
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
  return check_headers();
}

// Checks every header whose length field has arrived, so a bad one is refused before its body.
std::error_code FrameParser::check_headers() {
  while (buffer_.size() >= scanned_ + 4) {
    const std::uint32_t length = load_u32(buffer_.data() + scanned_);
    if (length == 0) {
      error_ = DecodeErrc::invalid_value;
    } else if (length > max_frame_bytes_) {
      error_ = DecodeErrc::too_large;
    }
    if (error_)
      return error_;
    scanned_ += 4 + std::size_t{length};
  }
  return {};
}

// Drops consumed bytes only when they are at least as many as the bytes kept, so each byte is
// moved at most once on average however the input is split.
void FrameParser::compact() {
  if (consumed_ == 0)
    return;
  const std::size_t kept = buffer_.size() - consumed_;
  if (kept == 0) {
    if (buffer_.capacity() > kKeepCapacityBytes) {
      Bytes().swap(buffer_);
    } else {
      buffer_.clear();
    }
  } else if (consumed_ >= kept) {
    std::memmove(buffer_.data(), buffer_.data() + consumed_, kept);
    buffer_.resize(kept);
  } else {
    return;
  }
  scanned_ -= consumed_;
  consumed_ = 0;
}

std::optional<Frame> FrameParser::next() {
  if (error_)
    return std::nullopt;
  const std::size_t available = buffer_.size() - consumed_;
  if (available < kFrameHeaderBytes)
    return std::nullopt;
  const std::uint8_t* start = buffer_.data() + consumed_;
  const std::size_t length = load_u32(start);
  assert(length != 0 && length <= max_frame_bytes_);  // check_headers saw this header
  if (available < 4 + length)
    return std::nullopt;
  Frame frame;
  frame.kind = start[4];
  frame.payload.assign(start + kFrameHeaderBytes, start + 4 + length);
  consumed_ += 4 + length;
  if (consumed_ == buffer_.size())
    compact();
  return frame;
}

}  // namespace splitfs::protocol
