// Client-side cryptography: key derivation, keyed ids and authenticated encryption, all on OpenSSL
// EVP. Servers never see a key; they see ids and ciphertext.
//
// Shares are encrypted deterministically: a share's id is HMAC-SHA256(share-id key, plaintext) and
// the id is bound as associated data. Equal plaintexts of one user give equal ids and equal
// ciphertexts (so a server can deduplicate without learning anything), and a share served under
// the wrong id fails authentication. A share that compresses well is stored zstd-compressed; its id
// is still the hash of the raw plaintext, so compression never defeats deduplication. Manifests and
// entries are encrypted with random nonces, bound to their file id, version and kind.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include "common/bytes.hpp"

namespace splitfs::core {

inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::size_t kNonceBytes = 12;
inline constexpr std::size_t kTagBytes = 16;
using Key = std::array<std::uint8_t, kKeyBytes>;

// Fills `out` from OpenSSL's CSPRNG. Throws splitfs::Error if it fails.
void random_bytes(MutableByteView out);
Key random_key();

// One derived key per purpose (HKDF-SHA256 over the content key), so no key serves two uses.
struct KeySet {
  Key share_id{};     // names shares by their content
  Key share_enc{};    // encrypts shares
  Key share_nonce{};  // derives the nonces of compressed shares
  Key file_id{};      // names files by their path
  Key record{};       // encrypts manifests and entries
  Key local{};        // keys data kept on this machine only (the mount's disk cache)
  static KeySet derive(const Key& content_key);
};

// HMAC-SHA256(key, data).
Id keyed_hash(const Key& key, ByteView data);

// Share formats. The encrypted body is u8 encoding | data, encoding 0 = raw (data is the share),
// 1 = zstd (data is one zstd frame that records the share's length).
//   format 1: u8 1 | AES-256-GCM(nonce = id[0..12]) of (0 | share) | 16-byte tag
//   format 2: u8 2 | 12-byte nonce | AES-256-GCM(nonce) of (1 | frame) | 16-byte tag
// A format-2 nonce is HMAC-SHA256(nonce key, 1 | frame) cut to 12 bytes: equal frames get equal
// nonces (deduplication still works) and two different frames of one share (another zstd version)
// never share a nonce. Raw shares cost kShareOverhead bytes more than the plaintext.
inline constexpr std::size_t kShareOverhead = 1 + 1 + kTagBytes;
inline constexpr std::size_t kCompressedShareOverhead = 1 + kNonceBytes + 1 + kTagBytes;
// The longest share open_share() rebuilds unless told a tighter bound (a 4 MiB segment's share is
// half of it; the protocol caps a share at 4 MiB).
inline constexpr std::size_t kMaxSharePlainBytes = 4u << 20;

enum class Compression {
  automatic,  // zstd when it pays: the stored body is under 90% of the raw share
  none,
};

Id share_id(const KeySet& keys, ByteView plaintext);
// `id` must be share_id(keys, plaintext), computed from these very bytes: open_share() relies on it
// (a raw share that authenticates under an id is that id's share; it is not hashed again).
// Compression::automatic first compresses a small sample at zstd's fastest level (about a
// microsecond), so data that does not compress (random, already compressed) is not slowed down.
Bytes seal_share(const KeySet& keys, const Id& id, ByteView plaintext,
                 Compression compression = Compression::automatic);
// The same into `blob`, whose memory is reused when it is large enough (a raw share).
void seal_share(const KeySet& keys, const Id& id, ByteView plaintext, Bytes& blob,
                Compression compression = Compression::automatic);
// Authenticates and decrypts; false when the blob is not the share `id` names or its plaintext
// would exceed max_size bytes (decompression never produces more than that).
bool open_share(const KeySet& keys, const Id& id, ByteView blob, Bytes& plaintext,
                std::size_t max_size = kMaxSharePlainBytes);
// The same in the blob's own memory, which it overwrites: the plaintext (a view into `blob`), or
// nothing where open_share would fail. For a blob not needed afterwards: no copy, no buffer.
std::optional<ByteView> open_share_in_place(const KeySet& keys, const Id& id, Bytes& blob,
                                            std::size_t max_size = kMaxSharePlainBytes);

// Estimates how well data like `sample` compresses: compressed size over raw size (1.0 or a bit
// more for data that does not compress). Deterministic, and cheap on a sample of a few 4 KiB
// blocks.
double compressed_fraction(ByteView sample);

// Seals an arbitrary encoded body (as format 2 when encoding != 0): for tests of hostile input.
Bytes seal_encoded_share_for_testing(const KeySet& keys, const Id& id, std::uint8_t encoding,
                                     ByteView data);

// Record format: u8 format (1) | 12-byte random nonce | ciphertext | 16-byte tag.
Bytes seal_record(const Key& key, ByteView associated, ByteView plaintext);
bool open_record(const Key& key, ByteView associated, ByteView blob, Bytes& plaintext);

}  // namespace splitfs::core
