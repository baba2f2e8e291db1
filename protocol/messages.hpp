// The wire vocabulary both servers speak: one set of requests and replies, carried as HTTP bodies
// by the HTTPS door and as frames by the TCP door. Pure data; encoding lives in codec.hpp.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::protocol {

inline constexpr std::uint32_t kVersion = 1;

// Bounds every decoder enforces before allocating; servers and clients share them.
inline constexpr std::size_t kMaxShareBytes = 4u << 20;      // one encrypted share
inline constexpr std::size_t kMaxBatchBytes = 32u << 20;     // all shares in one put/get
inline constexpr std::size_t kMaxBatchItems = 4096;          // ids or shares in one request
inline constexpr std::size_t kMaxEntryBytes = 64u << 10;     // a file's small encrypted entry
inline constexpr std::size_t kMaxManifestBytes = 64u << 20;  // a file's encrypted manifest
inline constexpr std::size_t kMaxRefs = 4u << 20;            // share references in one commit
inline constexpr std::size_t kMaxBatchCommits = 256;         // commits in one CommitBatch
inline constexpr std::size_t kMaxListItems = 1u << 20;       // files in one listing
inline constexpr std::size_t kMaxMessageBytes = kMaxManifestBytes + (kMaxRefs * 36) + (1u << 20);
inline constexpr std::size_t kMaxErrorText = 1024;

enum class Op : std::uint8_t {
  hello = 1,
  has_shares = 2,
  put_shares = 3,
  get_shares = 4,
  commit = 5,
  get_file = 6,
  list_files = 7,
  remove_file = 8,
  file_info = 9,
  stats = 10,
  commit_batch = 11,
};

// Outcome of a request. Anything but ok carries an ErrorReply.
enum class Status : std::uint8_t {
  ok = 0,
  bad_request = 1,      // malformed or out-of-bounds request
  not_found = 2,        // unknown file or share
  conflict = 3,         // commit version not newer than the stored one
  missing_shares = 4,   // commit references shares the server does not hold
  too_large = 5,        // a bound was exceeded
  corrupt = 6,          // the server found its own stored data damaged
  unsupported = 7,      // unknown op or protocol version
  internal = 8,         // server-side failure; the text reveals no internals
  unauthorized = 9,     // the client certificate is not enrolled (or was revoked) on this server
  quota_exceeded = 10,  // over the user's quota, or the server's capacity or disk is full
  busy = 11,            // too many connections (for this user or in all); try again later
};

struct ShareRef {
  Id id{};
  std::uint32_t chunks = 0;  // 1024-byte chunks of the file this share carries
  friend bool operator==(const ShareRef&, const ShareRef&) = default;
};

struct ShareBlob {
  Id id{};
  Bytes data;  // opaque ciphertext
  friend bool operator==(const ShareBlob&, const ShareBlob&) = default;
};

// Requests.
struct Hello {
  std::uint32_t version = kVersion;
  friend bool operator==(const Hello&, const Hello&) = default;
};
struct HasShares {
  std::vector<Id> ids;
  friend bool operator==(const HasShares&, const HasShares&) = default;
};
struct PutShares {
  std::vector<ShareBlob> shares;
  friend bool operator==(const PutShares&, const PutShares&) = default;
};
struct GetShares {
  std::vector<Id> ids;
  friend bool operator==(const GetShares&, const GetShares&) = default;
};
// Makes `version` of `file` current, atomically: refs must all be held; version must grow.
struct Commit {
  Id file{};
  std::uint64_t version = 0;
  std::vector<ShareRef> refs;
  Bytes entry;     // small encrypted summary returned by listings
  Bytes manifest;  // full encrypted manifest
  friend bool operator==(const Commit&, const Commit&) = default;
};
// Several commits in one request: each is judged on its own, as if sent alone (one may succeed
// while another conflicts), and the server may make them durable together. The refs of all of
// them count against kMaxRefs.
struct CommitBatch {
  std::vector<Commit> commits;
  friend bool operator==(const CommitBatch&, const CommitBatch&) = default;
};
struct GetFile {
  Id file{};
  friend bool operator==(const GetFile&, const GetFile&) = default;
};
struct ListFiles {
  friend bool operator==(const ListFiles&, const ListFiles&) = default;
};
struct RemoveFile {
  Id file{};
  friend bool operator==(const RemoveFile&, const RemoveFile&) = default;
};
struct GetFileInfo {
  Id file{};
  friend bool operator==(const GetFileInfo&, const GetFileInfo&) = default;
};
// What the requesting user occupies on this server.
struct GetStats {
  friend bool operator==(const GetStats&, const GetStats&) = default;
};

using Request = std::variant<Hello, HasShares, PutShares, GetShares, Commit, GetFile, ListFiles,
                             RemoveFile, GetFileInfo, GetStats, CommitBatch>;

// Replies to successful requests, by op:
//   hello, put_shares, commit, remove_file -> Empty
//   has_shares -> Presence; get_shares -> Shares (blobs in request order)
//   get_file -> FileRecord; list_files -> FileList; file_info -> FileInfo; stats -> UsageStats
//   commit_batch -> CommitOutcomes
struct Empty {
  friend bool operator==(const Empty&, const Empty&) = default;
};
struct Presence {
  std::vector<bool> present;  // one per requested id, in order
  friend bool operator==(const Presence&, const Presence&) = default;
};
struct Shares {
  std::vector<Bytes> blobs;
  friend bool operator==(const Shares&, const Shares&) = default;
};
struct FileRecord {
  std::uint64_t version = 0;
  Bytes entry;
  Bytes manifest;
  friend bool operator==(const FileRecord&, const FileRecord&) = default;
};
struct FileListItem {
  Id file{};
  std::uint64_t version = 0;
  Bytes entry;
  friend bool operator==(const FileListItem&, const FileListItem&) = default;
};
struct FileList {
  std::vector<FileListItem> files;
  friend bool operator==(const FileList&, const FileList&) = default;
};
// What one server holds of one file: how the placement rule can be checked from the server side.
struct FileInfo {
  std::uint64_t version = 0;
  std::uint64_t shares = 0;
  std::uint64_t chunks = 0;
  std::uint64_t stored_bytes = 0;  // ciphertext bytes of the referenced shares
  friend bool operator==(const FileInfo&, const FileInfo&) = default;
};
// One user's totals on one server. Logical sizes count whole 1024-byte chunks.
struct UsageStats {
  std::uint64_t files = 0;
  std::uint64_t logical_bytes = 0;        // the files' data, as many times as files hold it
  std::uint64_t referenced_bytes = 0;     // stored bytes of the files' shares, per reference
  std::uint64_t shares = 0;               // distinct shares the files reference
  std::uint64_t share_logical_bytes = 0;  // their data before compression
  std::uint64_t share_bytes = 0;          // their stored (compressed, encrypted) bytes
  std::uint64_t garbage_shares = 0;       // unreferenced shares awaiting compaction
  std::uint64_t garbage_bytes = 0;
  std::uint64_t disk_bytes = 0;  // what the user's shares and file records take on disk
  friend bool operator==(const UsageStats&, const UsageStats&) = default;
};
// One status per commit of a CommitBatch, in order: ok, or what a Commit sent alone would have
// been answered (the message and missing ids are left out: send that commit alone to learn them).
struct CommitOutcomes {
  std::vector<Status> statuses;
  friend bool operator==(const CommitOutcomes&, const CommitOutcomes&) = default;
};
struct ErrorReply {
  Status status = Status::internal;
  std::string message;      // short, human-readable, at most kMaxErrorText bytes
  std::vector<Id> missing;  // for missing_shares and not_found on shares
  friend bool operator==(const ErrorReply&, const ErrorReply&) = default;
};

using Reply = std::variant<Empty, Presence, Shares, FileRecord, FileList, FileInfo, UsageStats,
                           CommitOutcomes, ErrorReply>;

Op op_of(const Request& request);

}  // namespace splitfs::protocol
