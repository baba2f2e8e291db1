#include "core/crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <splitfs/errors.hpp>

namespace splitfs::core {

namespace {

constexpr std::uint8_t kShareFormat = 1;
constexpr std::uint8_t kCompressedShareFormat = 2;
constexpr std::uint8_t kRecordFormat = 1;
constexpr std::uint8_t kEncodingRaw = 0;
constexpr std::uint8_t kEncodingZstd = 1;
constexpr std::string_view kShareDomain = "splitfs share v1";

// Compression pays when the stored body (with its nonce) is under this share of the raw share.
constexpr double kCompressionPays = 0.9;
// Shares this short are stored raw: nothing worth saving.
constexpr std::size_t kMinCompressBytes = 128;
// The sample: up to kSampleSlices slices of kSampleSliceBytes spread over the share, compressed at
// zstd's fastest level. A sample that does not shrink to kSamplePromising skips the real attempt.
constexpr std::size_t kSampleSlices = 4;
constexpr std::size_t kSampleSliceBytes = 1024;
constexpr int kSampleLevel = -1;
constexpr double kSamplePromising = 0.9;
// zstd levels: the default for ordinary shares; a stronger one for shares of 1 MiB and more,
// which only files that compress well get (their larger search window pays off there).
constexpr int kLevel = 3;
constexpr int kLargeShareLevel = 5;
constexpr std::size_t kLargeShareBytes = 1u << 20;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* ctx) const { EVP_MAC_CTX_free(ctx); }
};
struct MacFree {
  void operator()(EVP_MAC* mac) const { EVP_MAC_free(mac); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* ctx) const { EVP_KDF_CTX_free(ctx); }
};
struct KdfFree {
  void operator()(EVP_KDF* kdf) const { EVP_KDF_free(kdf); }
};
struct ZstdFree {
  void operator()(ZSTD_CCtx* ctx) const { ZSTD_freeCCtx(ctx); }
  void operator()(ZSTD_DCtx* ctx) const { ZSTD_freeDCtx(ctx); }
};

[[noreturn]] void fail(const char* what) {
  throw Error(std::string("cryptography failure: ") + what);
}

const EVP_CIPHER* aes256gcm() {
  // Fetched once: implicit fetches per call cost more than encrypting a small share.
  static const std::unique_ptr<EVP_CIPHER, decltype(&EVP_CIPHER_free)> cipher(
      EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr), &EVP_CIPHER_free);
  if (!cipher)
    fail("AES-256-GCM unavailable");
  return cipher.get();
}

EVP_MAC* hmac() {
  static const std::unique_ptr<EVP_MAC, MacFree> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
  if (!mac)
    fail("HMAC unavailable");
  return mac.get();
}

Key hkdf(const Key& secret, std::string_view info) {
  static const std::unique_ptr<EVP_KDF, KdfFree> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf)
    fail("HKDF unavailable");
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx)
    fail("HKDF context");
  char digest[] = "SHA256";
  static constexpr char kSalt[] = "splitfs key derivation v1";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                        const_cast<std::uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(kSalt),
                                        sizeof(kSalt) - 1),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_end(),
  };
  Key out{};
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1)
    fail("HKDF derive");
  return out;
}

// One cipher context per thread, re-initialised for each call: allocating a context per share
// costs more than sealing a small one.
EVP_CIPHER_CTX* cipher_context() {
  thread_local const CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx)
    fail("AEAD context");
  return ctx.get();
}

// AES-256-GCM over `parts` of plaintext (concatenated), writing ciphertext to `out` and the tag
// after it.
void gcm_seal(const Key& key, const std::uint8_t* nonce, ByteView associated,
              std::initializer_list<ByteView> parts, std::uint8_t* out) {
  EVP_CIPHER_CTX* ctx = cipher_context();
  if (EVP_EncryptInit_ex2(ctx, aes256gcm(), key.data(), nonce, nullptr) != 1)
    fail("AEAD init");
  int len = 0;
  if (!associated.empty() && EVP_EncryptUpdate(ctx, nullptr, &len, associated.data(),
                                               static_cast<int>(associated.size())) != 1) {
    fail("AEAD associated data");
  }
  std::size_t written = 0;
  for (ByteView part : parts) {
    if (part.empty())
      continue;
    if (EVP_EncryptUpdate(ctx, out + written, &len, part.data(), static_cast<int>(part.size())) !=
        1) {
      fail("AEAD encrypt");
    }
    written += static_cast<std::size_t>(len);
  }
  if (EVP_EncryptFinal_ex(ctx, out + written, &len) != 1)
    fail("AEAD final");
  written += static_cast<std::size_t>(len);
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, out + written) != 1)
    fail("AEAD tag");
}

// Authenticates and decrypts `sealed` (ciphertext then tag): its first `head.size()` plaintext
// bytes go to `head`, the rest to `body` (room for them; it may be where they are in `sealed`,
// decrypting in place), so a leading format byte never costs a copy of the body. On failure what
// `body` holds is garbage.
bool gcm_open_to(const Key& key, const std::uint8_t* nonce, ByteView associated, ByteView sealed,
                 MutableByteView head, std::uint8_t* body) {
  if (sealed.size() < kTagBytes + head.size())
    return false;
  const std::size_t length = sealed.size() - kTagBytes - head.size();
  EVP_CIPHER_CTX* ctx = cipher_context();
  if (EVP_DecryptInit_ex2(ctx, aes256gcm(), key.data(), nonce, nullptr) != 1)
    fail("AEAD init");
  int len = 0;
  if (!associated.empty() && EVP_DecryptUpdate(ctx, nullptr, &len, associated.data(),
                                               static_cast<int>(associated.size())) != 1) {
    return false;
  }
  if (!head.empty() &&
      EVP_DecryptUpdate(ctx, head.data(), &len, sealed.data(), static_cast<int>(head.size())) != 1)
    return false;
  // The tag is read before an in-place body could reach it (it never does: it lies past the body).
  std::uint8_t tag[kTagBytes];
  std::memcpy(tag, sealed.data() + head.size() + length, kTagBytes);
  if (length > 0 && EVP_DecryptUpdate(ctx, body, &len, sealed.data() + head.size(),
                                      static_cast<int>(length)) != 1) {
    return false;
  }
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, tag) == 1 &&
         EVP_DecryptFinal_ex(ctx, body + length, &len) == 1;
}

// The same into `plaintext` (resized to fit; cleared on failure).
bool gcm_open(const Key& key, const std::uint8_t* nonce, ByteView associated, ByteView sealed,
              MutableByteView head, Bytes& plaintext) {
  if (sealed.size() < kTagBytes + head.size())
    return false;
  plaintext.resize(sealed.size() - kTagBytes - head.size());
  if (!gcm_open_to(key, nonce, associated, sealed, head, plaintext.data())) {
    plaintext.clear();
    return false;
  }
  return true;
}

bool gcm_open(const Key& key, const std::uint8_t* nonce, ByteView associated, ByteView sealed,
              Bytes& plaintext) {
  return gcm_open(key, nonce, associated, sealed, {}, plaintext);
}

// HMAC-SHA256(key, the concatenation of `parts`). Each thread keeps a context per key it used
// last (a few: share ids and nonces alternate), re-initialised with that key's precomputed state
// instead of a context set up afresh per call.
Id hmac_sha256(const Key& key, std::initializer_list<ByteView> parts) {
  struct Cached {
    Key key{};
    std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx;
  };
  constexpr std::size_t kCachedKeys = 4;
  thread_local std::array<Cached, kCachedKeys> cache;
  thread_local std::size_t next = 0;
  EVP_MAC_CTX* ctx = nullptr;
  for (Cached& c : cache) {
    if (c.ctx && c.key == key) {
      ctx = c.ctx.get();
      break;
    }
  }
  if (ctx != nullptr) {
    // A null key keeps the one set before.
    if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1)
      fail("HMAC init");
  } else {
    Cached& slot = cache[next];
    next = (next + 1) % kCachedKeys;
    slot.ctx.reset(EVP_MAC_CTX_new(hmac()));
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    if (!slot.ctx || EVP_MAC_init(slot.ctx.get(), key.data(), key.size(), params) != 1) {
      slot.ctx.reset();
      fail("HMAC init");
    }
    slot.key = key;
    ctx = slot.ctx.get();
  }
  for (ByteView part : parts) {
    if (EVP_MAC_update(ctx, part.data(), part.size()) != 1)
      fail("HMAC update");
  }
  Id out{};
  std::size_t len = 0;
  if (EVP_MAC_final(ctx, out.data(), &len, out.size()) != 1 || len != out.size())
    fail("HMAC final");
  return out;
}

// Domain label then id: a fixed-size value, so sealing a share allocates nothing for it.
std::array<std::uint8_t, kShareDomain.size() + sizeof(Id)> share_associated(const Id& id) {
  std::array<std::uint8_t, kShareDomain.size() + sizeof(Id)> aad{};
  std::memcpy(aad.data(), kShareDomain.data(), kShareDomain.size());
  std::memcpy(aad.data() + kShareDomain.size(), id.data(), id.size());
  return aad;
}

// One compression and one decompression context per thread: creating them costs more than
// compressing a share.
ZSTD_CCtx* compressor() {
  thread_local const std::unique_ptr<ZSTD_CCtx, ZstdFree> ctx(ZSTD_createCCtx());
  if (!ctx)
    fail("zstd context");
  return ctx.get();
}

ZSTD_DCtx* decompressor() {
  thread_local const std::unique_ptr<ZSTD_DCtx, ZstdFree> ctx(ZSTD_createDCtx());
  if (!ctx)
    fail("zstd context");
  return ctx.get();
}

// Compresses `data` at `level` into `out` (resized to fit); the frame records the content size.
void zstd_compress(ByteView data, int level, Bytes& out) {
  out.resize(ZSTD_compressBound(data.size()));
  const std::size_t n =
      ZSTD_compressCCtx(compressor(), out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n))
    fail("zstd compression");
  out.resize(n);
}

// Up to kSampleSlices slices spread evenly over `data`, back to back.
Bytes sample_of(ByteView data) {
  if (data.size() <= kSampleSlices * kSampleSliceBytes)
    return {data.begin(), data.end()};
  Bytes sample;
  sample.reserve(kSampleSlices * kSampleSliceBytes);
  const std::size_t step = (data.size() - kSampleSliceBytes) / (kSampleSlices - 1);
  for (std::size_t i = 0; i < kSampleSlices; ++i) {
    const auto first = data.begin() + static_cast<std::ptrdiff_t>(i * step);
    sample.insert(sample.end(), first, first + kSampleSliceBytes);
  }
  return sample;
}

// The zstd frame of `plaintext` if storing it compressed pays, else nothing.
std::optional<Bytes> worth_compressing(ByteView plaintext) {
  if (plaintext.size() < kMinCompressBytes)
    return std::nullopt;
  Bytes frame;
  const Bytes sample = sample_of(plaintext);
  zstd_compress(sample, kSampleLevel, frame);
  if (static_cast<double>(frame.size()) >= kSamplePromising * static_cast<double>(sample.size()))
    return std::nullopt;
  zstd_compress(plaintext, plaintext.size() >= kLargeShareBytes ? kLargeShareLevel : kLevel, frame);
  if (static_cast<double>(kNonceBytes + frame.size()) >=
      kCompressionPays * static_cast<double>(plaintext.size())) {
    return std::nullopt;
  }
  return frame;
}

// Rebuilds the share from one zstd frame, refusing anything but a single frame whose recorded
// length is at most max_size; never allocates more than that.
bool zstd_decompress(ByteView frame, std::size_t max_size, Bytes& out) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR || size > max_size)
    return false;
  if (ZSTD_findFrameCompressedSize(frame.data(), frame.size()) != frame.size())
    return false;
  out.resize(static_cast<std::size_t>(size));
  const std::size_t n =
      ZSTD_decompressDCtx(decompressor(), out.data(), out.size(), frame.data(), frame.size());
  return !ZSTD_isError(n) && n == out.size();
}

// Format 2: the nonce is a keyed hash of the encoded body, so it is unique per distinct body.
Bytes seal_compressed(const KeySet& keys, const Id& id, std::uint8_t encoding, ByteView data) {
  Bytes blob(kCompressedShareOverhead + data.size());
  blob[0] = kCompressedShareFormat;
  const Id mac = hmac_sha256(keys.share_nonce, {ByteView(&encoding, 1), data});
  std::memcpy(blob.data() + 1, mac.data(), kNonceBytes);
  gcm_seal(keys.share_enc, blob.data() + 1, share_associated(id), {ByteView(&encoding, 1), data},
           blob.data() + 1 + kNonceBytes);
  return blob;
}

}  // namespace

void random_bytes(MutableByteView out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1)
    fail("random generator");
}

Key random_key() {
  Key key{};
  random_bytes(key);
  return key;
}

KeySet KeySet::derive(const Key& content_key) {
  KeySet keys;
  keys.share_id = hkdf(content_key, "splitfs share id");
  keys.share_enc = hkdf(content_key, "splitfs share encryption");
  keys.share_nonce = hkdf(content_key, "splitfs share nonce");
  keys.file_id = hkdf(content_key, "splitfs file id");
  keys.record = hkdf(content_key, "splitfs record encryption");
  keys.local = hkdf(content_key, "splitfs local data");
  return keys;
}

Id keyed_hash(const Key& key, ByteView data) {
  return hmac_sha256(key, {data});
}

Id share_id(const KeySet& keys, ByteView plaintext) {
  return keyed_hash(keys.share_id, plaintext);
}

Bytes seal_share(const KeySet& keys, const Id& id, ByteView plaintext, Compression compression) {
  Bytes blob;
  seal_share(keys, id, plaintext, blob, compression);
  return blob;
}

void seal_share(const KeySet& keys, const Id& id, ByteView plaintext, Bytes& blob,
                Compression compression) {
  if (compression == Compression::automatic) {
    if (const std::optional<Bytes> frame = worth_compressing(plaintext)) {
      blob = seal_compressed(keys, id, kEncodingZstd, *frame);
      return;
    }
  }
  blob.resize(kShareOverhead + plaintext.size());
  blob[0] = kShareFormat;
  const std::uint8_t encoding = kEncodingRaw;
  gcm_seal(keys.share_enc, id.data(), share_associated(id), {ByteView(&encoding, 1), plaintext},
           blob.data() + 1);
}

namespace {

// Authenticates and decrypts a raw share (format 1, at least kShareOverhead bytes): its
// blob.size() - kShareOverhead plaintext bytes go to `body`, which may be where they are in the
// blob. The id is the nonce and part of the associated data, and only this key's holder seals,
// always under the id of the very bytes sealed (seal_share's contract): a blob that authenticates
// under `id` is the share `id` names, so hashing the plaintext again would prove nothing more.
bool open_raw_share(const KeySet& keys, const Id& id, ByteView blob, std::uint8_t* body) {
  std::uint8_t encoding = 0xff;
  return gcm_open_to(keys.share_enc, id.data(), share_associated(id), blob.subspan(1),
                     MutableByteView(&encoding, 1), body) &&
         encoding == kEncodingRaw;
}

}  // namespace

bool open_share(const KeySet& keys, const Id& id, ByteView blob, Bytes& plaintext,
                std::size_t max_size) {
  plaintext.clear();
  if (blob.size() < kShareOverhead)
    return false;
  if (blob[0] == kShareFormat) {
    if (blob.size() - kShareOverhead > max_size)
      return false;
    plaintext.resize(blob.size() - kShareOverhead);
    if (!open_raw_share(keys, id, blob, plaintext.data())) {
      plaintext.clear();
      return false;
    }
    return true;
  }
  if (blob[0] != kCompressedShareFormat)
    return false;
  std::uint8_t encoding = 0xff;
  Bytes body;
  if (blob.size() < kCompressedShareOverhead ||
      !gcm_open(keys.share_enc, blob.data() + 1, share_associated(id),
                blob.subspan(1 + kNonceBytes), MutableByteView(&encoding, 1), body) ||
      encoding != kEncodingZstd || !zstd_decompress(body, max_size, plaintext)) {
    plaintext.clear();
    return false;
  }
  // A compressed share is rebuilt by a decoder: recomputing its id proves the bytes rebuilt are
  // the share named, whatever the frame held.
  if (share_id(keys, plaintext) != id) {
    plaintext.clear();
    return false;
  }
  return true;
}

std::optional<ByteView> open_share_in_place(const KeySet& keys, const Id& id, Bytes& blob,
                                            std::size_t max_size) {
  if (blob.size() < kShareOverhead)
    return std::nullopt;
  if (blob[0] == kShareFormat) {
    std::uint8_t* body = blob.data() + 2;  // past the format byte and the sealed encoding byte
    const std::size_t length = blob.size() - kShareOverhead;
    if (length > max_size || !open_raw_share(keys, id, blob, body))
      return std::nullopt;
    return ByteView(body, length);
  }
  // A compressed share is rebuilt into a buffer of its own anyway, which takes the blob's place.
  Bytes plaintext;
  if (!open_share(keys, id, blob, plaintext, max_size))
    return std::nullopt;
  blob = std::move(plaintext);
  return ByteView(blob);
}

double compressed_fraction(ByteView sample) {
  if (sample.empty())
    return 1.0;
  Bytes frame;
  zstd_compress(sample, kLevel, frame);
  return static_cast<double>(frame.size()) / static_cast<double>(sample.size());
}

Bytes seal_encoded_share_for_testing(const KeySet& keys, const Id& id, std::uint8_t encoding,
                                     ByteView data) {
  if (encoding == kEncodingRaw)
    return seal_share(keys, id, data, Compression::none);
  return seal_compressed(keys, id, encoding, data);
}

Bytes seal_record(const Key& key, ByteView associated, ByteView plaintext) {
  Bytes blob(1 + kNonceBytes + plaintext.size() + kTagBytes);
  blob[0] = kRecordFormat;
  random_bytes(MutableByteView(blob.data() + 1, kNonceBytes));
  gcm_seal(key, blob.data() + 1, associated, {plaintext}, blob.data() + 1 + kNonceBytes);
  return blob;
}

bool open_record(const Key& key, ByteView associated, ByteView blob, Bytes& plaintext) {
  if (blob.size() < 1 + kNonceBytes + kTagBytes || blob[0] != kRecordFormat)
    return false;
  return gcm_open(key, blob.data() + 1, associated, blob.subspan(1 + kNonceBytes), plaintext);
}

}  // namespace splitfs::core
