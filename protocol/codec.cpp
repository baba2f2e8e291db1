#include "protocol/codec.hpp"

#include <algorithm>
#include <cassert>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/wire.hpp"

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

constexpr std::uint8_t kMaxStatus = static_cast<std::uint8_t>(Status::busy);

// The requests that carry nothing but a file id.
template <class M>
concept FileOnly =
    std::is_same_v<M, GetFile> || std::is_same_v<M, RemoveFile> || std::is_same_v<M, GetFileInfo>;

// ---- encoding -------------------------------------------------------------------------------
//
// Every message is written twice through the same code: once into a counting writer to learn its
// exact size, then into a buffer reserved to that size, so a 32 MiB batch is allocated once and
// each blob is copied once.

void write(wire::Writer& w, const Hello& m) {
  w.u32(m.version);
}
void write(wire::Writer& w, const HasShares& m) {
  w.ids(m.ids);
}
void write(wire::Writer& w, const PutShares& m) {
  w.length(m.shares.size());
  for (const ShareBlob& share : m.shares) {
    w.id(share.id);
    w.blob(share.data);
  }
}
void write(wire::Writer& w, const GetShares& m) {
  w.ids(m.ids);
}
void write(wire::Writer& w, const Commit& m) {
  w.id(m.file);
  w.u64(m.version);
  w.length(m.refs.size());
  for (const ShareRef& ref : m.refs) {
    w.id(ref.id);
    w.u32(ref.chunks);
  }
  w.blob(m.entry);
  w.blob(m.manifest);
}
void write(wire::Writer& w, const CommitBatch& m) {
  w.length(m.commits.size());
  for (const Commit& commit : m.commits)
    write(w, commit);
}
void write(wire::Writer& w, const FileOnly auto& m) {
  w.id(m.file);
}
void write(wire::Writer&, const ListFiles&) {}
void write(wire::Writer&, const GetStats&) {}

void write(wire::Writer&, const Empty&) {}
void write(wire::Writer& w, const Presence& m) {
  w.length(m.present.size());
  for (bool flag : m.present)
    w.u8(flag ? 1 : 0);
}
void write(wire::Writer& w, const Shares& m) {
  w.length(m.blobs.size());
  for (const Bytes& blob : m.blobs)
    w.blob(blob);
}
void write(wire::Writer& w, const FileRecord& m) {
  w.u64(m.version);
  w.blob(m.entry);
  w.blob(m.manifest);
}
void write(wire::Writer& w, const FileList& m) {
  w.length(m.files.size());
  for (const FileListItem& item : m.files) {
    w.id(item.file);
    w.u64(item.version);
    w.blob(item.entry);
  }
}
void write(wire::Writer& w, const FileInfo& m) {
  w.u64(m.version);
  w.u64(m.shares);
  w.u64(m.chunks);
  w.u64(m.stored_bytes);
}
void write(wire::Writer& w, const CommitOutcomes& m) {
  w.length(m.statuses.size());
  for (const Status status : m.statuses)
    w.u8(static_cast<std::uint8_t>(status));
}
void write(wire::Writer& w, const UsageStats& m) {
  for (std::uint64_t v :
       {m.files, m.logical_bytes, m.referenced_bytes, m.shares, m.share_logical_bytes,
        m.share_bytes, m.garbage_shares, m.garbage_bytes, m.disk_bytes}) {
    w.u64(v);
  }
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

void write(wire::Writer& w, const ErrorReply& m) {
  w.u8(static_cast<std::uint8_t>(m.status == Status::ok ? Status::internal : m.status));
  w.text(clip_message(m.message));
  std::span<const Id> missing = m.missing;
  w.ids(missing.first(std::min(missing.size(), kMaxBatchItems)));
}

template <class Variant>
void write_variant(wire::Writer& w, const Variant& message) {
  std::visit([&w](const auto& m) { write(w, m); }, message);
}

// The size of `message`'s encoding, counted without writing it.
template <class Variant>
std::size_t payload_size(const Variant& message) {
  wire::Writer counter;
  write_variant(counter, message);
  return counter.size();
}

// Writes `message` (of `payload` bytes) after an optional frame header carrying `kind`.
template <class Variant>
void write_message(wire::Writer& w, const Variant& message, std::size_t payload,
                   std::optional<std::uint8_t> frame_kind) {
  if (frame_kind) {
    w.length(payload + 1);
    w.u8(*frame_kind);
  }
  write_variant(w, message);
}

// Encodes `message` after an optional frame header carrying `kind` into `out` (replacing what it
// held), with at most one allocation: none when `out` already has the room.
template <class Variant>
void encode(const Variant& message, std::optional<std::uint8_t> frame_kind, Bytes& out) {
  const std::size_t payload = payload_size(message);
  const std::size_t header = frame_kind ? kFrameHeaderBytes : 0;
  out.clear();
  out.reserve(header + payload);
  wire::Writer w(out);
  write_message(w, message, payload, frame_kind);
  assert(w.size() == header + payload);
}

template <class Variant>
Bytes encode(const Variant& message, std::optional<std::uint8_t> frame_kind) {
  Bytes out;
  encode(message, frame_kind, out);
  return out;
}

// ---- decoding -------------------------------------------------------------------------------
//
// A reader keeps its first failure and reads nothing after it, so each message is read straight
// through and judged once; counts are bounded by the input, so reading on past a failure is cheap.

Bytes copy_of(ByteView bytes) {
  return {bytes.begin(), bytes.end()};
}

void read(wire::Reader& r, Hello& m) {
  m.version = r.u32();
}
void read(wire::Reader& r, HasShares& m) {
  m.ids = r.ids(kMaxBatchItems);
}
void read(wire::Reader& r, PutShares& m) {
  m.shares.resize(r.count(kMaxBatchItems, sizeof(Id) + 4));
  std::size_t budget = kMaxBatchBytes;
  for (ShareBlob& share : m.shares) {
    share.id = r.id();
    share.data = copy_of(r.blob(kMaxShareBytes, budget));
  }
}
void read(wire::Reader& r, GetShares& m) {
  m.ids = r.ids(kMaxBatchItems);
}
// refs_left: what the refs of a batch's commits may still number.
void read(wire::Reader& r, Commit& m, std::size_t& refs_left) {
  m.file = r.id();
  m.version = r.u64();
  m.refs.resize(r.count(refs_left, sizeof(Id) + 4));
  refs_left -= m.refs.size();
  for (ShareRef& ref : m.refs) {
    ref.id = r.id();
    ref.chunks = r.u32();
  }
  m.entry = copy_of(r.blob(kMaxEntryBytes));
  m.manifest = copy_of(r.blob(kMaxManifestBytes));
}
void read(wire::Reader& r, Commit& m) {
  std::size_t refs_left = kMaxRefs;
  read(r, m, refs_left);
}
void read(wire::Reader& r, CommitBatch& m) {
  // Each commit takes at least an id, a version and three length prefixes.
  m.commits.resize(r.count(kMaxBatchCommits, sizeof(Id) + 8 + (3 * sizeof(std::uint32_t))));
  std::size_t refs_left = kMaxRefs;
  for (Commit& commit : m.commits)
    read(r, commit, refs_left);
}
void read(wire::Reader& r, FileOnly auto& m) {
  m.file = r.id();
}
void read(wire::Reader&, ListFiles&) {}
void read(wire::Reader&, GetStats&) {}

void read(wire::Reader&, Empty&) {}
void read(wire::Reader& r, Presence& m) {
  m.present.resize(r.count(kMaxBatchItems, 1));
  for (auto&& flag : m.present)
    flag = r.boolean();
}
void read(wire::Reader& r, Shares& m) {
  m.blobs.resize(r.count(kMaxBatchItems, 4));
  std::size_t budget = kMaxBatchBytes;
  for (Bytes& blob : m.blobs)
    blob = copy_of(r.blob(kMaxShareBytes, budget));
}
void read(wire::Reader& r, FileRecord& m) {
  m.version = r.u64();
  m.entry = copy_of(r.blob(kMaxEntryBytes));
  m.manifest = copy_of(r.blob(kMaxManifestBytes));
}
void read(wire::Reader& r, FileList& m) {
  m.files.resize(r.count(kMaxListItems, sizeof(Id) + 8 + 4));
  for (FileListItem& item : m.files) {
    item.file = r.id();
    item.version = r.u64();
    item.entry = copy_of(r.blob(kMaxEntryBytes));
  }
}
void read(wire::Reader& r, FileInfo& m) {
  m.version = r.u64();
  m.shares = r.u64();
  m.chunks = r.u64();
  m.stored_bytes = r.u64();
}
void read(wire::Reader& r, UsageStats& m) {
  for (std::uint64_t* v :
       {&m.files, &m.logical_bytes, &m.referenced_bytes, &m.shares, &m.share_logical_bytes,
        &m.share_bytes, &m.garbage_shares, &m.garbage_bytes, &m.disk_bytes}) {
    *v = r.u64();
  }
}
void read(wire::Reader& r, CommitOutcomes& m) {
  m.statuses.resize(r.count(kMaxBatchCommits, 1));
  for (Status& status : m.statuses) {
    const std::uint8_t byte = r.u8();
    if (byte > kMaxStatus)
      r.fail(wire::Reader::Failure::invalid);
    status = static_cast<Status>(byte);
  }
}
// The status byte was judged by decode_error before the read.
void read(wire::Reader& r, ErrorReply& m) {
  m.status = static_cast<Status>(r.u8());
  m.message = r.text(kMaxErrorText);
  m.missing = r.ids(kMaxBatchItems);
}

std::error_code to_error(wire::Reader::Failure failure) {
  switch (failure) {
    case wire::Reader::Failure::none:
      return {};
    case wire::Reader::Failure::truncated:
      return DecodeErrc::truncated;
    case wire::Reader::Failure::too_large:
      return DecodeErrc::too_large;
    case wire::Reader::Failure::invalid:
      return DecodeErrc::invalid_value;
    case wire::Reader::Failure::trailing:
      return DecodeErrc::trailing_bytes;
  }
  return DecodeErrc::invalid_value;
}

// Decodes `payload` as exactly one T and stores it in `out` only on success.
template <class T, class Variant>
std::error_code decode_as(ByteView payload, Variant& out) {
  wire::Reader reader(payload);
  T message;
  read(reader, message);
  if (auto ec = to_error(reader.outcome()))
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
    Op operator()(const GetStats&) const { return Op::stats; }
    Op operator()(const CommitBatch&) const { return Op::commit_batch; }
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
    case Op::stats:
      return decode_as<GetStats>(payload, out);
    case Op::commit_batch:
      return decode_as<CommitBatch>(payload, out);
  }
  return DecodeErrc::unknown_op;
}

Bytes encode_reply(const Reply& reply) {
  return encode(reply, std::nullopt);
}

void encode_reply(const Reply& reply, Bytes& out) {
  encode(reply, std::nullopt, out);
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
    case Op::stats:
      return decode_as<UsageStats>(payload, out);
    case Op::commit_batch:
      return decode_as<CommitOutcomes>(payload, out);
  }
  return DecodeErrc::unknown_op;
}

std::error_code decode_error(ByteView payload, ErrorReply& out) {
  // The status byte is judged first, so a bad one is reported whatever follows it.
  if (!payload.empty() && payload[0] > kMaxStatus)
    return DecodeErrc::unknown_status;
  if (!payload.empty() && payload[0] == static_cast<std::uint8_t>(Status::ok))
    return DecodeErrc::invalid_value;
  return decode_as<ErrorReply>(payload, out);
}

Bytes encode_request_frame(const Request& request) {
  return encode(request, static_cast<std::uint8_t>(op_of(request)));
}

namespace {

// encode() for a gathering write (Gathered): only a frame header needs the size counted first.
Gathered gather(const Request& request, std::optional<std::uint8_t> frame_kind) {
  Gathered out;
  wire::Writer w(out.fields, out.references);
  write_message(w, request, frame_kind ? payload_size(request) : 0, frame_kind);
  return out;
}

}  // namespace

Gathered gather_request(const Request& request) {
  return gather(request, std::nullopt);
}

Gathered gather_request_frame(const Request& request) {
  return gather(request, static_cast<std::uint8_t>(op_of(request)));
}

std::vector<ByteView> Gathered::pieces() const {
  std::vector<ByteView> out;
  out.reserve((2 * references.size()) + 1);
  std::size_t from = 0;
  for (const wire::Reference& reference : references) {
    if (reference.at > from)
      out.push_back(ByteView(fields).subspan(from, reference.at - from));
    out.push_back(reference.bytes);
    from = reference.at;
  }
  if (from < fields.size())
    out.push_back(ByteView(fields).subspan(from));
  return out;
}

Bytes encode_reply_frame(const Reply& reply) {
  return encode(reply, static_cast<std::uint8_t>(status_of(reply)));
}

void encode_reply_frame(const Reply& reply, Bytes& out) {
  encode(reply, static_cast<std::uint8_t>(status_of(reply)), out);
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
// prepare() points into a payload under way only when at least this much of it is missing and may
// be received: smaller pieces go through the scratch area, with the next header.
constexpr std::size_t kMinInPlaceBytes = 4u << 10;
// The most prepare() adds to a payload at once: it zeroes what it adds, and a read over TLS returns
// at most one record (16 KiB), so a larger window would be zeroed for nothing.
constexpr std::size_t kMaxInPlaceBytes = 16u << 10;

// The length field of the frame header at `p`, whose four bytes the caller has.
std::uint32_t frame_length(const std::uint8_t* p) {
  return wire::Reader(ByteView(p, 4)).u32();
}
}  // namespace

FrameParser::FrameParser(std::size_t max_frame_bytes) : max_frame_bytes_(max_frame_bytes) {}

std::error_code FrameParser::feed(ByteView bytes) {
  if (error_)
    return error_;
  return take(bytes);
}

MutableByteView FrameParser::prepare(std::size_t max) {
  Bytes& payload = partial_.payload;
  const std::size_t rest = missing();
  prepared_at_.reset();
  if (!error_ && rest >= kMinInPlaceBytes && max >= kMinInPlaceBytes) {
    prepared_at_ = payload.size();
    payload.resize(*prepared_at_ + std::min({rest, max, kMaxInPlaceBytes}));  // within reserve
    return MutableByteView(payload).subspan(*prepared_at_);
  }
  scratch_.resize(max);
  return scratch_;
}

std::error_code FrameParser::commit(std::size_t n) {
  const std::optional<std::size_t> at = std::exchange(prepared_at_, std::nullopt);
  if (!at) {
    assert(n <= scratch_.size());
    return feed(ByteView(scratch_).first(n));
  }
  Bytes& payload = partial_.payload;
  assert(n <= payload.size() - *at);
  payload.resize(*at + n);
  buffered_ += n;
  finish_if_complete();
  return {};
}

// Sorts bytes into headers and payloads; checks each header as soon as its length field is in.
std::error_code FrameParser::take(ByteView bytes) {
  buffered_ += bytes.size();
  while (!bytes.empty()) {
    if (!in_payload_) {
      const std::size_t n = std::min(kFrameHeaderBytes - header_have_, bytes.size());
      std::copy_n(bytes.begin(), n, header_.begin() + static_cast<std::ptrdiff_t>(header_have_));
      header_have_ += n;
      bytes = bytes.subspan(n);
      if (header_have_ < 4)
        continue;
      const std::uint32_t length = frame_length(header_.data());
      if (length == 0)
        error_ = DecodeErrc::invalid_value;
      else if (length > max_frame_bytes_)
        error_ = DecodeErrc::too_large;
      if (error_)
        return error_;
      if (header_have_ < kFrameHeaderBytes)
        continue;
      header_have_ = 0;
      partial_.kind = header_[4];
      payload_size_ = length - 1;
      partial_.payload.swap(spare_);
      partial_.payload.clear();
      // A fresh reservation is address space only: pages come with the bytes.
      partial_.payload.reserve(payload_size_);
      in_payload_ = true;
    } else {
      Bytes& payload = partial_.payload;
      const std::size_t n = std::min(payload_size_ - payload.size(), bytes.size());
      payload.insert(payload.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
      bytes = bytes.subspan(n);
    }
    finish_if_complete();
  }
  return {};
}

std::optional<std::uint32_t> FrameParser::announced() const {
  if (in_payload_)
    return static_cast<std::uint32_t>(payload_size_ + 1);
  if (header_have_ >= 4)
    return frame_length(header_.data());
  return std::nullopt;
}

void FrameParser::finish_if_complete() {
  if (!in_payload_ || partial_.payload.size() != payload_size_)
    return;
  ready_.push_back(std::move(partial_));
  partial_ = Frame{};
  in_payload_ = false;
}

void FrameParser::recycle(Bytes payload) {
  if (payload.capacity() > spare_.capacity() && payload.capacity() <= kMaxSpareBytes)
    spare_ = std::move(payload);
}

std::optional<Frame> FrameParser::next() {
  if (error_ || ready_.empty())
    return std::nullopt;
  Frame frame = std::move(ready_.front());
  ready_.pop_front();
  buffered_ -= kFrameHeaderBytes + frame.payload.size();
  return frame;
}

}  // namespace splitfs::protocol
