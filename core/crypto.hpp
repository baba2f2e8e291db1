// Client-side cryptography: key derivation, keyed ids and authenticated encryption, all on OpenSSL
// EVP. Servers never see a key; they see ids and ciphertext.
//
// Shares are encrypted deterministically: a share's id is HMAC-SHA256(share-id key, plaintext), its
// nonce is the id's first 12 bytes and the id is bound as associated data. Equal plaintexts of one
// user give equal ids and equal ciphertexts (so a server can deduplicate without learning
// anything), and a share served under the wrong id fails authentication. Manifests and entries are
// encrypted with random nonces, bound to their file id, version and kind.
#pragma once

#include <array>
#include <cstdint>
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
  Key share_id{};   // names shares by their content
  Key share_enc{};  // encrypts shares
  Key file_id{};    // names files by their path
  Key record{};     // encrypts manifests and entries
  static KeySet derive(const Key& content_key);
};

// HMAC-SHA256(key, data).
Id keyed_hash(const Key& key, ByteView data);

// Share format: u8 format (1) | ciphertext | 16-byte tag. The plaintext is u8 encoding (0 = raw) |
// data. Overhead is kShareOverhead bytes.
inline constexpr std::size_t kShareOverhead = 1 + 1 + kTagBytes;
Id share_id(const KeySet& keys, ByteView plaintext);
Bytes seal_share(const KeySet& keys, const Id& id, ByteView plaintext);
// Authenticates and decrypts; false when the blob is not the share `id` names.
bool open_share(const KeySet& keys, const Id& id, ByteView blob, Bytes& plaintext);

// Record format: u8 format (1) | 12-byte random nonce | ciphertext | 16-byte tag.
Bytes seal_record(const Key& key, ByteView associated, ByteView plaintext);
bool open_record(const Key& key, ByteView associated, ByteView blob, Bytes& plaintext);

}  // namespace splitfs::core
