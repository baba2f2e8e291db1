// The splitfs client library. A Client stores files split across two servers (1024-byte chunks,
// odd chunks to the HTTPS server, even chunks to the TCP server), encrypted and authenticated on
// this machine, and fetches them back byte for byte or not at all.
//
// Configuration lives in a client home folder (init() writes it; default ~/.config/splitfs or
// $SPLITFS_HOME): the two servers' addresses and pinned certificate fingerprints, the content key
// (optionally protected by a passphrase) and the client's own TLS identity, which each server's
// operator enrols. Every failure is a splitfs::Error subclass (errors.hpp).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <splitfs/errors.hpp>

namespace splitfs {

struct InitOptions {
  std::string https;              // "HOST:PORT" of the HTTPS server
  std::string tcp;                // "HOST:PORT" of the TCP server
  std::string https_fingerprint;  // "SHA256:<hex>"; required unless accept_new
  std::string tcp_fingerprint;
  // Trust whatever identity the servers present now and pin it (like ssh's accept-new).
  bool accept_new = false;
  // Replace an existing configuration. The content key is kept unless new_key is set.
  bool force = false;
  bool new_key = false;
  // The servers are the problem statement's original ones (plain HTTP upload/download and the raw
  // TCP protocol): no TLS, so no fingerprints. https may be given as "http://HOST:PORT".
  bool legacy = false;
  // Non-empty: protect a newly created content key with this passphrase.
  std::string key_passphrase;
};

// What init() pinned.
struct InitResult {
  std::filesystem::path home;
  std::string https_fingerprint;
  std::string tcp_fingerprint;
  bool key_created = false;
  // Non-empty when some guarantees do not hold for this configuration (legacy servers): show it.
  std::string warning;
  // This client's certificate fingerprint, for each server's operator to enrol (`users add`).
  std::string client_fingerprint;
};

// Writes a client configuration and, if absent, a new 256-bit content key (mode 0600) and a client
// identity (a P-256 key and certificate in home/identity, or in $SPLITFS_IDENTITY) into home.
InitResult init(const std::filesystem::path& home, const InitOptions& options);

// ---- The client's identity and content key (SECURITY.md) ----
//
// Losing the content key loses the data: every copy of it on the servers is ciphertext only that
// key opens. Keep an exported copy somewhere safe.

// This client's certificate fingerprint ("SHA256:<hex>"), creating the identity if there is none.
std::string client_fingerprint(const std::filesystem::path& home);
// Whether the content key in home is protected by a passphrase.
bool key_is_protected(const std::filesystem::path& home);
// Opens the content key in home now, asking for its passphrase (read_passphrase) if it is
// protected, so that nothing later in this process asks again. Throws ConfigError.
void unlock_key(const std::filesystem::path& home);
// Protects the content key in home with new_passphrase, replacing any earlier protection; an empty
// new_passphrase removes the protection. A protected key is opened first (read_passphrase).
void set_key_passphrase(const std::filesystem::path& home, const std::string& new_passphrase);
// Writes the content key to file (a new file, mode 0600), always protected by passphrase.
void export_key(const std::filesystem::path& home, const std::filesystem::path& file,
                const std::string& passphrase);
// Installs the key exported to file into home, once passphrase opens it: kept protected by that
// passphrase, or in clear if !keep_protected. An existing, different key is replaced only with
// replace (it is kept as key.old).
void import_key(const std::filesystem::path& home, const std::filesystem::path& file,
                const std::string& passphrase, bool keep_protected, bool replace);
// A passphrase from $SPLITFS_PASSPHRASE (for a new one $SPLITFS_NEW_PASSPHRASE first), else typed
// on the terminal without echo (twice when new). Throws ConfigError if neither is available.
std::string read_passphrase(const std::string& prompt, bool new_one);

struct ListEntry {
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t version = 0;
  std::int64_t stored_at_ns = 0;
  std::uint64_t chunks = 0;
};

struct ServerPlacement {
  std::string server;   // "HTTPS" or "TCP"
  std::string address;  // "host:port"
  std::uint64_t version = 0;
  std::uint64_t shares = 0;
  std::uint64_t chunks = 0;  // as the server reports it
  std::uint64_t stored_bytes = 0;
};

struct FileStat {
  ListEntry entry;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::uint32_t segment_bytes = 0;
  std::vector<ServerPlacement> servers;
};

// What this user occupies on one server, as the server counts it (Client::df). Logical sizes
// count whole 1024-byte chunks; files include the mount's objects.
struct ServerUsage {
  std::string server;   // "HTTPS" or "TCP"
  std::string address;  // "host:port"
  std::uint64_t files = 0;
  std::uint64_t logical_bytes = 0;         // the files' data, as many times as files hold it
  std::uint64_t unique_logical_bytes = 0;  // the distinct data, after deduplication
  std::uint64_t stored_bytes = 0;          // the distinct data as stored: compressed, encrypted
  std::uint64_t garbage_bytes = 0;         // no longer referenced, until the server compacts
  std::uint64_t disk_bytes = 0;            // everything of this user on the server's disk
  double dedup_ratio() const {
    return unique_logical_bytes == 0
               ? 1.0
               : static_cast<double>(logical_bytes) / static_cast<double>(unique_logical_bytes);
  }
  double compression_ratio() const {
    return stored_bytes == 0
               ? 1.0
               : static_cast<double>(unique_logical_bytes) / static_cast<double>(stored_bytes);
  }
};

// ---- Objects: the lower-level storage the mount (fs/) builds on ----
//
// An object is stored exactly like a file (striped, encrypted, committed on both servers) but under
// a key in a namespace of its own: no name a user can store collides with a key, and list() does
// not show objects. Its content is a sequence of segments, each addressed by the ids of its shares
// (SegmentRef). Segments can be uploaded ahead of the commit that uses them (stage_segments), and a
// new version can reuse the segments of an older one, so a small edit to a large object sends only
// the segments it changed. Commits are compare-and-swap: a commit goes to both servers at once (one
// round trip) and the HTTPS server arbitrates, so of two writers starting from the same version
// exactly one wins. The winner may then be given a version above the one it asked for, when the
// loser reached the TCP server first (StoredObject::version says which).

// One segment of an object: the id of its share on each server (all zero for an empty share) and
// its length in bytes. Ids are keyed hashes of the content, so equal refs mean equal bytes.
struct SegmentRef {
  std::array<std::array<std::uint8_t, 32>, 2> shares{};
  std::uint32_t length = 0;
  friend bool operator==(const SegmentRef&, const SegmentRef&) = default;
};

// One verified version of an object.
struct StoredObject {
  std::string key;
  std::uint64_t version = 0;
  std::uint64_t size = 0;
  std::uint32_t segment_bytes = 0;  // every segment but the last has exactly this length
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::vector<SegmentRef> segments;
};

// What commit_object() records besides the segments.
struct ObjectAttributes {
  std::uint64_t size = 0;
  std::uint32_t segment_bytes = 0;  // 0: the configured segment size
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
};

// One object of commit_objects().
struct ObjectCommit {
  std::string key;
  std::uint64_t expected = 0;
  ObjectAttributes attributes;
  std::vector<SegmentRef> segments;
};

// Share traffic of the object calls (stage_segments, read_segments) since the Client was made.
struct TransferCounters {
  std::uint64_t bytes_sent = 0;      // share ciphertext uploaded
  std::uint64_t shares_sent = 0;     // shares uploaded
  std::uint64_t shares_skipped = 0;  // shares a server already held, not sent again
  std::uint64_t bytes_received = 0;  // share ciphertext downloaded
  std::uint64_t commits = 0;         // object versions committed
};

// A file stored or fetched although a malware check found something in it, because the policy
// for its verdict is "warn" (README "Malicious files"). Findings are worst first.
struct ScanWarning {
  std::string file;      // the local file stored, or the destination fetched into
  std::string severity;  // "suspicious" or "malicious"
  std::string summary;   // e.g. "suspicious: heuristics office.vba-macros (in a.docm)"
  struct Finding {
    std::string severity;
    std::string detector;  // "heuristics", "yara" or "clamav"
    std::string rule;
    std::string where;  // the member's path inside an archive, else empty
    std::string detail;
  };
  std::vector<Finding> findings;
};

// How far one store, fetch or verify has come (Client::store, fetch and verify with a handler).
// Store counts the file's bytes whose shares both servers hold; fetch and verify count bytes
// downloaded and verified. bytes_done only grows, and reaches bytes_total once all is done.
struct TransferProgress {
  std::string name;  // the stored name
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
  // Of bytes_done, those not moved by this call: what a resumed fetch kept from the interrupted
  // one. Rates should count bytes_done - bytes_resumed.
  std::uint64_t bytes_resumed = 0;
};
// Called on the thread that called store/fetch/verify, as segments complete (often: throttle any
// drawing). It must not call into the same Client; an exception it throws ends the transfer.
using ProgressHandler = std::function<void(const TransferProgress&)>;

// What Client::verify() checked: every share of every segment fetched, decrypted and
// authenticated against the manifest, and the whole content hashed.
struct VerifyResult {
  ListEntry entry;
  std::uint64_t segments = 0;
  std::string sha256;  // lowercase hex of the content's SHA-256, to compare with a local copy
};

class Client {
 public:
  // $SPLITFS_HOME, else ~/.config/splitfs.
  static std::filesystem::path default_home();
  // Reads the configuration and key in home. Throws ConfigError.
  explicit Client(const std::filesystem::path& home = default_home());
  ~Client();
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Stores the local file at path under name, replacing an older version atomically.
  void store(const std::filesystem::path& path, const std::string& name);
  // Rebuilds name into dest (a file path, or a folder to fetch into under the name's last
  // component). The output appears only once every byte is verified.
  std::filesystem::path fetch(const std::string& name, const std::filesystem::path& dest);
  // The same, reporting progress to `progress` (may be empty).
  void store(const std::filesystem::path& path, const std::string& name,
             const ProgressHandler& progress);
  std::filesystem::path fetch(const std::string& name, const std::filesystem::path& dest,
                              const ProgressHandler& progress);
  // Fetches and checks every share of name without writing anything. Throws NotFound,
  // IntegrityError naming the server whose data failed, ServerUnavailable, ...
  VerifyResult verify(const std::string& name, const ProgressHandler& progress = {});
  // Bytes [offset, offset + length) of name, verified; shorter at the end of the file.
  std::vector<std::uint8_t> read(const std::string& name, std::uint64_t offset,
                                 std::uint64_t length);
  std::vector<ListEntry> list();
  void remove(const std::string& name);
  FileStat stat(const std::string& name);
  // What this user occupies on each server (HTTPS first). Throws ServerError where a server
  // cannot count (the problem statement's original servers).
  std::vector<ServerUsage> df();

  // ---- Malicious file checks (README "Malicious files") ----
  //
  // store() scans the local file before anything is sent, fetch() the rebuilt file before it
  // appears under its name; a blocked file raises MaliciousFileError and is kept in quarantine.

  // On by default. Off, nothing is scanned: only as a user's explicit, visible choice.
  void set_scanning(bool enabled);
  // Called for files let through with a warning; by default one line on stderr.
  void on_scan_warning(std::function<void(const ScanWarning&)> handler);

  // ---- Objects (see above). Keys are 1 to 1024 bytes without NUL. ----

  // The segment size new objects get (from the configuration).
  std::uint32_t segment_bytes() const;
  // The newest version of key, verified. A version only the HTTPS server holds yet (a commit cut
  // short before the TCP server) is accepted when it verifies. Throws NotFound, and IntegrityError
  // for a version below min_version or below one this client has seen (rollback).
  StoredObject open_object(const std::string& key, std::uint64_t min_version = 0);
  // The version the HTTPS server holds (0 for none): one round trip, for polling.
  std::uint64_t object_version(const std::string& key);
  // Uploads segments (each at most segment_bytes() long), skipping shares a server already holds,
  // and returns their refs for commit_object(). Staged segments are durable but unreferenced.
  std::vector<SegmentRef> stage_segments(std::span<const std::span<const std::uint8_t>> segments);
  // Downloads and verifies segments, in order.
  std::vector<std::vector<std::uint8_t>> read_segments(std::span<const SegmentRef> refs);
  // Commits version expected + 1 of key made of `segments` (from stage_segments() or an older
  // version; every one but the last exactly segment_bytes long). expected is the version the
  // caller started from, 0 for a new key. Throws ConflictError if another version was committed
  // since. The returned version is usually expected + 1 (higher after a race, see above).
  StoredObject commit_object(const std::string& key, std::uint64_t expected,
                             const ObjectAttributes& attributes, std::vector<SegmentRef> segments);
  // commit_object() for several objects in one request per server, which a server may make
  // durable with one sync. An object both servers took comes back as commit_object() returns
  // it; one they did not comes back empty (a conflict, a missing share, or servers that take
  // commits one at a time): commit_object() then says why, or finds the object committed on
  // the HTTPS server alone, as after any interrupted commit. Throws what commit_object() throws
  // when a server cannot be reached or answers the whole request with an error.
  std::vector<std::optional<StoredObject>> commit_objects(std::span<const ObjectCommit> objects);
  // Removes key and its references on both servers. Throws NotFound if neither holds it.
  void remove_object(const std::string& key);
  // Where an object's chunks are, as the servers report it (entry.name is the key).
  FileStat stat_object(const std::string& key);
  TransferCounters counters() const;
  // A key for data this machine keeps for itself (the mount's disk cache), derived from the content
  // key and used for nothing sent to a server.
  std::array<std::uint8_t, 32> local_key() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The problem statement's front door, on the default home: store a local file under its base name;
// fetch a stored name into the current folder.
void split_store(const std::filesystem::path& file);
void split_fetch(const std::string& file);

}  // namespace splitfs
