// The shared store: a Store (store.hpp) whose packs are objects in an S3-compatible object store
// and whose index lives in PostgreSQL, so that several server processes, on one machine or many,
// serve one store at once. Selected per server with --backend s3://BUCKET?endpoint=... and --index
// postgresql://... (store/shared_store.hpp's parse helpers; credentials from a file or the
// environment, never the command line).
//
// Layout: each put_shares call that brings new shares writes them as one pack object,
// BUCKET/[prefix/]packs/<16 hex digits>, in the local pack format (pack.hpp: magic, then records
// that carry their own id, size and CRC-32C); shares are read back with ranged GETs: of the rest of
// the pack (kept for the next reads) when a fetch reads it in order, else of one record. A share's
// index lookup also brings the places of the records after it, so a fetch asks the index about
// once per pack rather than once per share.
// Pack numbers come from a PostgreSQL sequence, so no two processes ever write the same object.
// The index schema (default "splitfs", or ?schema=NAME on the index URL) holds packs(number,
// created, sealed, size), shares(usr, id, pack, pos, size, refcount, touched, chunks),
// files(usr, id, version, ..., refs, manifest) and compactions, as the local index does, and
// user_usage(usr, disk_bytes).
//
// Guarantees, as store.hpp's, across processes:
// - put_shares answers only after the pack object's PUT succeeded (the object store's durability)
//   and the share rows committed. A pack row is inserted, unsealed, before its PUT; the rows and
//   the seal commit in one transaction, so an object is never referenced before it is complete,
//   and an object whose row is gone is garbage that compaction deletes.
// - commit and remove_file run in one transaction each, serialised per file by a transaction
//   advisory lock, and lock the referenced share rows (FOR UPDATE, in id order) before changing
//   reference counts, so concurrent commits of overlapping content through different processes
//   keep every refcount equal to its references; deadlocks and serialisation failures are retried.
// - One compaction runs at a time across all processes (a session advisory lock; the others answer
//   busy). It drops garbage past the grace period in short transactions that skip and recheck
//   rows locked by a concurrent put or commit, copies a pack's live records to a new object before
//   moving their rows in one transaction, and deletes an object only once no row points at it. A
//   reader that raced a move looks the share up again. check() waits for a running compaction.
// - Capacity (Options::capacity_bytes) counts the pack objects and the index; the reserve file
//   does not apply (the object store's space is not this machine's disk).
// - Quotas are kept here (keeps_quotas()): table user_usage holds each user's Usage::disk_bytes,
//   changed in the same transactions as the rows it counts; put_shares_within and commit_within
//   check it under that row's lock, so all processes enforce one count.
// Failures of either engine answer io (logged, never returned as text); nothing is half-applied.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "objectstore/s3.hpp"
#include "store/pack.hpp"
#include "store/store.hpp"

namespace splitfs::store {

// Where the index lives: a libpq URI (postgresql://USER@HOST:PORT/DB?...) with an optional
// schema=NAME parameter (lowercase letters, digits, '_'; default "splitfs"), which is taken out
// before libpq sees the rest. A password in the URI is refused: it belongs in $PGPASSFILE (or
// ~/.pgpass) or the service file.
struct IndexLocation {
  std::string conninfo;  // for libpq
  std::string schema = "splitfs";
};
// Accepts the URI itself, or the path of a file whose first line is the URI. nullopt with `error`.
std::optional<IndexLocation> parse_index(std::string_view text, std::string& error);

struct SharedLocation {
  objectstore::Location objects;
  objectstore::Credentials credentials;
  IndexLocation index;
  objectstore::Options object_options;
};

// Opens (creating the bucket and the schema if needed) the shared store. Throws StoreError when
// either engine cannot be reached or refuses us.
std::unique_ptr<Store> open_shared(const SharedLocation& location, const Options& options = {});

// The same from a server's flags: --backend s3://..., --index postgresql://... (or a file) and the
// credentials file (empty: the environment, objectstore::load_credentials). Throws StoreError
// saying what is wrong.
std::unique_ptr<Store> open_shared(std::string_view backend, std::string_view index,
                                   const std::filesystem::path& credentials_file,
                                   const Options& options = {});

// One pack object for `shares`: the file magic, then one record per share in the order given
// (pack.hpp's format), as views into `headers` and the shares' own bytes (which must outlive it),
// and the offset of each record. Not copyable: `parts` points into `headers`.
struct PackLayout {
  PackLayout() = default;
  PackLayout(const PackLayout&) = delete;
  PackLayout& operator=(const PackLayout&) = delete;
  std::vector<pack::RecordHeader> headers;
  std::vector<ByteView> parts;
  std::vector<std::int64_t> positions;
  std::int64_t size = 0;
};
void lay_out_pack(std::span<const ShareInput> shares, PackLayout& out);

// The object key of pack `number`: "packs/000000000000002a" for 42.
std::string pack_key(std::int64_t number);

}  // namespace splitfs::store
