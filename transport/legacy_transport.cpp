// The legacy transport: protocol requests mapped onto an original server's put and get (see
// legacy_transport.hpp for the objects it keeps there and why).
#include "transport/legacy_transport.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <splitfs/errors.hpp>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "protocol/codec.hpp"
#include "transport/legacy_store.hpp"

namespace splitfs::transport {
namespace legacy {
namespace {

constexpr std::array<std::uint8_t, 8> kMagic{'S', 'P', 'L', 'I', 'T', 'F', 'S', 1};

void append_u64(Bytes& out, std::uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>(value >> shift));
}

std::uint64_t read_u64(const std::uint8_t* in) {
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i)
    value = (value << 8) | in[i];
  return value;
}

std::array<std::uint8_t, 32> sha256(ByteView data) {
  std::array<std::uint8_t, 32> digest{};
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 ||
      size != digest.size()) {
    throw Error("SHA-256 is not available");
  }
  return digest;
}

// Size of piece `index` of an object whose sealed form is `total` bytes.
std::size_t piece_size(std::uint64_t total, std::size_t index) {
  return static_cast<std::size_t>(
      std::min<std::uint64_t>(kPieceBytes, total - index * kPieceBytes));
}

}  // namespace

std::string share_object(const Id& share) {
  return "splitfs-s-" + to_hex(share);
}

std::string record_object(const Id& file, int slot) {
  return "splitfs-f-" + to_hex(file) + (slot == 0 ? "-a" : "-b");
}

std::string catalog_object(int slot) {
  return slot == 0 ? "splitfs-catalog-a" : "splitfs-catalog-b";
}

std::string piece_name(std::string_view object, std::size_t index) {
  return std::string(object) + "." + std::to_string(index);
}

Bytes seal_object(ByteView content, std::uint64_t generation) {
  Bytes out(kMagic.begin(), kMagic.end());
  out.reserve(kHeaderBytes + content.size());
  append_u64(out, generation);
  append_u64(out, content.size());
  const auto digest = sha256(content);
  out.insert(out.end(), digest.begin(), digest.end());
  out.insert(out.end(), content.begin(), content.end());
  return out;
}

std::size_t piece_count(std::uint64_t length) {
  return static_cast<std::size_t>((kHeaderBytes + length + kPieceBytes - 1) / kPieceBytes);
}

std::optional<ObjectHeader> read_header(ByteView piece0) {
  if (piece0.size() < kHeaderBytes || !std::equal(kMagic.begin(), kMagic.end(), piece0.begin()))
    return std::nullopt;
  ObjectHeader header;
  header.generation = read_u64(piece0.data() + 8);
  header.length = read_u64(piece0.data() + 16);
  std::memcpy(header.digest.data(), piece0.data() + 24, header.digest.size());
  if (header.length > kMaxObjectBytes ||
      piece0.size() != piece_size(kHeaderBytes + header.length, 0))
    return std::nullopt;
  return header;
}

std::optional<Bytes> open_object(ByteView sealed) {
  const auto header = read_header(sealed.first(std::min(sealed.size(), kPieceBytes)));
  if (!header || sealed.size() != kHeaderBytes + header->length)
    return std::nullopt;
  const ByteView content = sealed.subspan(kHeaderBytes);
  if (sha256(content) != header->digest)
    return std::nullopt;
  return Bytes(content.begin(), content.end());
}

namespace {

using protocol::ErrorReply;
using protocol::Reply;
using protocol::Status;

struct IdHash {
  std::size_t operator()(const Id& id) const {
    std::size_t h;
    std::memcpy(&h, id.data(), sizeof h);
    return h;
  }
};

// Share sizes learned this session, so a commit rarely needs to look its shares up. Cleared when
// full: a forgotten size only costs one lookup.
constexpr std::size_t kMaxKnownSizes = 1u << 16;

// Record payloads: a kind byte, then for a live record the stored bytes and the encoded Commit.
constexpr std::uint8_t kLiveRecord = 1;
constexpr std::uint8_t kTombstone = 2;

ErrorReply error(Status status, std::string message, std::vector<Id> missing = {}) {
  return ErrorReply{status, std::move(message), std::move(missing)};
}

// One read of an object kept in two slots.
struct Versioned {
  std::optional<Bytes> content;  // of the newest slot that checks out
  int slot = 0;                  // the slot it came from
  std::uint64_t generation = 0;  // the highest generation any slot's header announces
  bool damaged = false;          // some slot exists, none checks out
};

struct Record {
  enum class State { absent, live, removed, damaged } state = State::absent;
  std::uint64_t stored_bytes = 0;
  protocol::Commit commit;
  Versioned slots;
};

class LegacyTransport final : public Transport {
 public:
  explicit LegacyTransport(std::unique_ptr<PieceStore> store) : store_(std::move(store)) {}

  Reply call(const protocol::Request& request) override {
    return std::visit([this](const auto& r) -> Reply { return handle(r); }, request);
  }

  const Endpoint& endpoint() const override { return store_->endpoint(); }

 private:
  // ---- objects ----

  void write_object(const std::string& object, ByteView content, std::uint64_t generation) {
    const Bytes sealed = seal_object(content, generation);
    // Piece 0 last: once it is readable, every other piece has been written.
    for (std::size_t i = piece_count(content.size()); i-- > 0;) {
      store_->put(piece_name(object, i),
                  ByteView(sealed).subspan(i * kPieceBytes, piece_size(sealed.size(), i)));
    }
  }

  // The content of an object whose piece 0 has been read, if every piece is there and checks.
  std::optional<Bytes> read_rest(const std::string& object, Bytes piece0,
                                 const ObjectHeader& header) {
    const std::uint64_t total = kHeaderBytes + header.length;
    Bytes sealed = std::move(piece0);
    for (std::size_t i = 1; i < piece_count(header.length); ++i) {
      const std::optional<Bytes> piece = store_->get(piece_name(object, i));
      if (!piece || piece->size() != piece_size(total, i))
        return std::nullopt;
      sealed.insert(sealed.end(), piece->begin(), piece->end());
    }
    return open_object(sealed);
  }

  enum class Found { absent, whole, damaged };

  Found read_object(const std::string& object, Bytes& content) {
    std::optional<Bytes> piece0 = store_->get(piece_name(object, 0));
    if (!piece0)
      return Found::absent;
    const std::optional<ObjectHeader> header = read_header(*piece0);
    if (!header)
      return Found::damaged;
    std::optional<Bytes> whole = read_rest(object, std::move(*piece0), *header);
    if (!whole)
      return Found::damaged;
    content = std::move(*whole);
    return Found::whole;
  }

  Versioned read_versioned(const std::function<std::string(int)>& object) {
    Versioned out;
    std::array<std::optional<Bytes>, 2> piece0;
    std::array<std::optional<ObjectHeader>, 2> header;
    bool exists = false;
    for (int slot = 0; slot < 2; ++slot) {
      piece0[slot] = store_->get(piece_name(object(slot), 0));
      if (!piece0[slot])
        continue;
      exists = true;
      header[slot] = read_header(*piece0[slot]);
      if (header[slot])
        out.generation = std::max(out.generation, header[slot]->generation);
    }
    std::vector<int> order;
    for (int slot = 0; slot < 2; ++slot) {
      if (header[slot])
        order.push_back(slot);
    }
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return header[a]->generation > header[b]->generation; });
    for (const int slot : order) {
      if (auto content = read_rest(object(slot), std::move(*piece0[slot]), *header[slot])) {
        out.content = std::move(content);
        out.slot = slot;
        return out;
      }
    }
    out.damaged = exists;
    return out;
  }

  // Writes the next version into the slot that does not hold the current one.
  void write_versioned(const std::function<std::string(int)>& object, const Versioned& current,
                       ByteView content) {
    const int slot = current.content ? 1 - current.slot : static_cast<int>(current.generation % 2);
    write_object(object(slot), content, current.generation + 1);
  }

  static std::function<std::string(int)> record_slots(const Id& file) {
    return [file](int slot) { return record_object(file, slot); };
  }

  Record read_record(const Id& file) {
    Record record;
    record.slots = read_versioned(record_slots(file));
    const std::optional<Bytes>& content = record.slots.content;
    if (!content) {
      record.state = record.slots.damaged ? Record::State::damaged : Record::State::absent;
      return record;
    }
    if (content->size() == 1 && (*content)[0] == kTombstone) {
      record.state = Record::State::removed;
      return record;
    }
    protocol::Request request;
    if (content->size() < 9 || (*content)[0] != kLiveRecord ||
        protocol::decode_request(protocol::Op::commit, ByteView(*content).subspan(9), request)) {
      record.state = Record::State::damaged;
      return record;
    }
    record.state = Record::State::live;
    record.stored_bytes = read_u64(content->data() + 1);
    record.commit = std::move(std::get<protocol::Commit>(request));
    return record;
  }

  // Applies `change` to the catalog's file list (read, change, write the next version). Returns
  // an error reply instead when the catalog cannot be read or grows too large.
  std::optional<ErrorReply> update_catalog(
      const std::function<void(std::vector<protocol::FileListItem>&)>& change) {
    const Versioned current = read_versioned(catalog_object);
    protocol::FileList list;
    if (auto failure = decode_catalog(current, list))
      return failure;
    change(list.files);
    if (list.files.size() > protocol::kMaxListItems)
      return error(Status::too_large, "the catalog holds the most files it can");
    write_versioned(catalog_object, current, protocol::encode_reply(list));
    return std::nullopt;
  }

  static std::optional<ErrorReply> decode_catalog(const Versioned& current,
                                                  protocol::FileList& out) {
    if (!current.content) {
      if (current.damaged)
        return error(Status::corrupt, "the catalog of stored files is damaged");
      return std::nullopt;
    }
    Reply reply;
    if (protocol::decode_reply(protocol::Op::list_files, *current.content, reply) ||
        !std::holds_alternative<protocol::FileList>(reply)) {
      return error(Status::corrupt, "the catalog of stored files is damaged");
    }
    out = std::move(std::get<protocol::FileList>(reply));
    return std::nullopt;
  }

  void remember(const Id& share, std::uint64_t size) {
    if (known_sizes_.size() >= kMaxKnownSizes)
      known_sizes_.clear();
    known_sizes_[share] = size;
  }

  // ---- requests ----

  Reply handle(const protocol::Hello&) { return protocol::Empty{}; }

  // A share counts as held only when it reads back whole: checking costs one request for an
  // absent share and saves the upload of a present one, and a damaged share gets written again.
  Reply handle(const protocol::HasShares& request) {
    if (request.ids.size() > protocol::kMaxBatchItems)
      return error(Status::too_large, "too many ids in one request");
    protocol::Presence out;
    for (const Id& id : request.ids) {
      Bytes content;
      const bool present = read_object(share_object(id), content) == Found::whole;
      if (present)
        remember(id, content.size());
      out.present.push_back(present);
    }
    return out;
  }

  Reply handle(const protocol::PutShares& request) {
    if (request.shares.size() > protocol::kMaxBatchItems)
      return error(Status::too_large, "too many shares in one request");
    for (const auto& share : request.shares) {
      if (share.data.empty() || share.data.size() > protocol::kMaxShareBytes)
        return error(Status::too_large, "a share is empty or too large");
    }
    for (const auto& share : request.shares) {
      write_object(share_object(share.id), share.data, 0);
      remember(share.id, share.data.size());
    }
    return protocol::Empty{};
  }

  Reply handle(const protocol::GetShares& request) {
    if (request.ids.size() > protocol::kMaxBatchItems)
      return error(Status::too_large, "too many ids in one request");
    protocol::Shares out;
    std::vector<Id> missing;
    for (const Id& id : request.ids) {
      Bytes content;
      switch (read_object(share_object(id), content)) {
        case Found::absent:
          missing.push_back(id);
          break;
        case Found::damaged:
          return error(Status::corrupt, "a stored share is damaged or incomplete");
        case Found::whole:
          remember(id, content.size());
          out.blobs.push_back(std::move(content));
          break;
      }
    }
    if (!missing.empty())
      return error(Status::not_found, "shares not found", std::move(missing));
    return out;
  }

  Reply handle(const protocol::Commit& request) {
    if (request.refs.size() > protocol::kMaxRefs ||
        request.entry.size() > protocol::kMaxEntryBytes ||
        request.manifest.size() > protocol::kMaxManifestBytes) {
      return error(Status::too_large, "the commit exceeds a bound");
    }
    Record current = read_record(request.file);
    if (current.state == Record::State::live && current.commit.version >= request.version)
      return error(Status::conflict, "the version is not newer than the stored version");

    // Stored bytes count a share once per reference, as our own servers do.
    std::uint64_t stored_bytes = 0;
    std::vector<Id> missing;
    std::unordered_map<Id, bool, IdHash> looked_up;
    for (const protocol::ShareRef& ref : request.refs) {
      auto known = known_sizes_.find(ref.id);
      if (known == known_sizes_.end() && !looked_up.contains(ref.id)) {
        const std::optional<Bytes> piece0 = store_->get(piece_name(share_object(ref.id), 0));
        const auto header = piece0 ? read_header(*piece0) : std::nullopt;
        looked_up[ref.id] = header.has_value();
        if (header) {
          remember(ref.id, header->length);
          known = known_sizes_.find(ref.id);
        } else {
          missing.push_back(ref.id);
        }
      }
      if (known != known_sizes_.end())
        stored_bytes += known->second;
    }
    if (!missing.empty()) {
      return error(Status::missing_shares, "the commit references shares the server lacks",
                   std::move(missing));
    }

    Bytes payload{kLiveRecord};
    append_u64(payload, stored_bytes);
    const Bytes commit = protocol::encode_request(request);
    payload.insert(payload.end(), commit.begin(), commit.end());
    write_versioned(record_slots(request.file), current.slots, payload);
    if (auto failure = update_catalog([&](std::vector<protocol::FileListItem>& files) {
          auto it = std::find_if(files.begin(), files.end(),
                                 [&](const auto& item) { return item.file == request.file; });
          if (it == files.end())
            it = files.insert(files.end(), protocol::FileListItem{request.file, 0, {}});
          it->version = request.version;
          it->entry = request.entry;
        })) {
      return std::move(*failure);
    }
    return protocol::Empty{};
  }

  Reply handle(const protocol::GetFile& request) {
    Record record = read_record(request.file);
    if (auto failure = check_live(record))
      return std::move(*failure);
    return protocol::FileRecord{record.commit.version, std::move(record.commit.entry),
                                std::move(record.commit.manifest)};
  }

  Reply handle(const protocol::ListFiles&) {
    protocol::FileList list;
    if (auto failure = decode_catalog(read_versioned(catalog_object), list))
      return std::move(*failure);
    return list;
  }

  // The original servers cannot delete: the record becomes a tombstone and the catalog entry
  // goes; the encrypted shares stay where they are.
  Reply handle(const protocol::RemoveFile& request) {
    const Record record = read_record(request.file);
    if (record.state == Record::State::absent || record.state == Record::State::removed)
      return error(Status::not_found, "no such file");
    const Bytes tombstone{kTombstone};
    write_versioned(record_slots(request.file), record.slots, tombstone);
    if (auto failure = update_catalog([&](std::vector<protocol::FileListItem>& files) {
          std::erase_if(files, [&](const auto& item) { return item.file == request.file; });
        })) {
      return std::move(*failure);
    }
    return protocol::Empty{};
  }

  Reply handle(const protocol::GetFileInfo& request) {
    const Record record = read_record(request.file);
    if (auto failure = check_live(record))
      return std::move(*failure);
    protocol::FileInfo info;
    info.version = record.commit.version;
    info.shares = record.commit.refs.size();
    for (const auto& ref : record.commit.refs)
      info.chunks += ref.chunks;
    info.stored_bytes = record.stored_bytes;
    return info;
  }

  // The client then commits one by one, each a record of its own.
  Reply handle(const protocol::CommitBatch&) {
    return error(Status::unsupported, "the original servers take commits one at a time");
  }

  // The original servers keep no accounting of what a user stores.
  Reply handle(const protocol::GetStats&) {
    return error(Status::unsupported, "the original servers keep no storage statistics");
  }

  static std::optional<ErrorReply> check_live(const Record& record) {
    switch (record.state) {
      case Record::State::live:
        return std::nullopt;
      case Record::State::damaged:
        return error(Status::corrupt, "the stored record of this file is damaged");
      default:
        return error(Status::not_found, "no such file");
    }
  }

  std::unique_ptr<PieceStore> store_;
  std::unordered_map<Id, std::uint64_t, IdHash> known_sizes_;
};

}  // namespace

std::unique_ptr<Transport> make_legacy_transport(std::unique_ptr<PieceStore> store) {
  return std::make_unique<LegacyTransport>(std::move(store));
}

}  // namespace legacy

std::unique_ptr<Transport> make_legacy_http_transport(const Endpoint& endpoint,
                                                      const Timeouts& timeouts) {
  return legacy::make_legacy_transport(legacy::make_http_piece_store(endpoint, timeouts));
}

std::unique_ptr<Transport> make_legacy_tcp_transport(const Endpoint& endpoint,
                                                     const Timeouts& timeouts) {
  return legacy::make_legacy_transport(legacy::make_tcp_piece_store(endpoint, timeouts));
}

}  // namespace splitfs::transport
