// splitfs::Client: store and fetch through both servers at once, in batches of segments.
//
// Store: the file is read in batches of segments; each segment is striped into one share per
// server; per server, a worker hashes, encrypts, asks which shares the server already holds and
// uploads the rest, while the next batch is read. Once all shares are durable the manifest commits
// on both servers. Fetch runs the same pipeline backwards into a temporary file that is renamed
// over the destination only after every share has been verified.
//
// Resume: a store run again after an interruption asks each server which shares it holds and
// sends only the others, so what was committed before is not sent again; a fetch run again keeps
// the verified part of the interrupted one's temporary file (PendingOutput).
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <splitfs/client.hpp>
#include <unordered_set>
#include <utility>

#include "common/fd.hpp"
#include "common/thread_cache.hpp"
#include "core/config.hpp"
#include "core/crypto.hpp"
#include "core/manifest.hpp"
#include "core/scan_gate.hpp"
#include "core/stripe.hpp"
#include "core/version_log.hpp"
#include "protocol/messages.hpp"
#include "scan/scan.hpp"
#include "transport/legacy_transport.hpp"
#include "transport/transport.hpp"

namespace splitfs {

namespace fs = std::filesystem;
using namespace core;

namespace {

// File bytes moved per batch: large enough that requests are few, small enough that memory stays
// flat (two batches are alive at once).
constexpr std::size_t kBatchFileBytes = 8u << 20;
// File bytes per batch of a whole-file store or fetch: each server gets half of it in one request,
// and each put costs the server one fsync, so fewer and larger ones pay (a server's reply stays
// within protocol::kMaxBatchBytes).
constexpr std::size_t kTransferBatchBytes = 16u << 20;
// A fetch's output starts its way to disk every this many bytes written.
constexpr std::uint64_t kWriteBehindBytes = 16u << 20;
// Batches of a whole-file store or fetch in flight at once, each on its own connection to each
// server: a server's fsync of one batch then overlaps the transfer of the next.
constexpr std::size_t kLanes = 2;  // lane() has two connections to each server
constexpr std::uint64_t kMinBatchesForLanes = 4;
// Files at least this large are scanned beside their upload rather than before it.
constexpr std::uint64_t kScanFirstBytes = kTransferBatchBytes;

struct IdHash {
  std::size_t operator()(const Id& id) const {
    std::size_t h;
    std::memcpy(&h, id.data(), sizeof h);
    return h;
  }
};

std::string errno_text() {
  return std::strerror(errno);
}

// A fetch's output: the hidden file ".NAME.splitfs-part" beside the destination, renamed over it
// only once every byte is verified, so a failed fetch never leaves a partial file under the final
// name. A fetch interrupted by a server (ServerUnavailable) or by the end of the process leaves its
// part file; the next fetch to the same destination keeps the leading segments of it that still
// verify against the manifest it fetches (their share ids are computed again, so stale or foreign
// bytes are never kept) and fetches only the rest. Any other failure removes the part file. A part
// file that is not a plain file of ours, or that a concurrent fetch holds (flock), is left alone:
// the fetch then writes to a private temporary, removed on failure.
class PendingOutput {
 public:
  PendingOutput(const fs::path& dest, std::uint32_t mode) : dest_(dest), mode_(mode) {
    const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
    tmp_ = (dir / ("." + dest.filename().string() + ".splitfs-part")).string();
    fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st {};
    if (fd_ >= 0 && (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid() ||
                     st.st_nlink != 1 || ::flock(fd_, LOCK_EX | LOCK_NB) != 0)) {
      ::close(std::exchange(fd_, -1));
    }
    if (fd_ >= 0) {
      resumable_ = true;
      existing_ = static_cast<std::uint64_t>(st.st_size);
      return;
    }
    tmp_ = (dir / ("." + dest.filename().string() + ".splitfs-XXXXXX")).string();
    fd_ = ::mkstemp(tmp_.data());
    if (fd_ < 0)
      throw LocalIoError("cannot create a file in " + dir.string() + ": " + errno_text());
  }
  ~PendingOutput() {
    if (fd_ >= 0)
      ::close(fd_);
    if (!committed_ && !kept_)
      ::unlink(tmp_.c_str());
  }
  PendingOutput(const PendingOutput&) = delete;
  PendingOutput& operator=(const PendingOutput&) = delete;

  // Bytes an interrupted fetch left, to be checked with read_at() before any is kept.
  std::uint64_t existing() const { return existing_; }
  bool read_at(std::uint64_t offset, std::uint8_t* data, std::size_t size) const {
    for (std::size_t done = 0; done < size;) {
      const ssize_t n = ::pread(fd_, data + done, size - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Keeps the first `bytes` (verified by the caller); writing goes on after them.
  void keep_prefix(std::uint64_t bytes) {
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0 ||
        ::lseek(fd_, static_cast<off_t>(bytes), SEEK_SET) < 0) {
      throw LocalIoError("cannot write " + dest_.string() + ": " + errno_text());
    }
    existing_ = bytes;
    end_ = flushed_ = bytes;
  }
  void write(ByteView bytes) {
    if (!write_fully(fd_, bytes.data(), bytes.size())) {
      throw LocalIoError("cannot write " + dest_.string() + ": " + errno_text());
    }
    end_ += bytes.size();
    // The disk writes start behind the fetch instead of all at once in commit()'s fsync, which
    // then waits for the last few MiB only. A hint: commit() still makes every byte durable.
    if (end_ - flushed_ >= kWriteBehindBytes) {
      ::sync_file_range(fd_, static_cast<off_t>(flushed_), static_cast<off_t>(end_ - flushed_),
                        SYNC_FILE_RANGE_WRITE);
      flushed_ = end_;
    }
  }
  void commit() {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    if (::fchmod(fd_, static_cast<mode_t>(mode_ & 0777 & ~mask)) != 0 || ::fsync(fd_) != 0 ||
        ::close(std::exchange(fd_, -1)) != 0 || ::rename(tmp_.c_str(), dest_.c_str()) != 0) {
      throw LocalIoError("cannot write " + dest_.string() + ": " + errno_text());
    }
    committed_ = true;
  }
  // The fetch was interrupted: leave what was written for the next fetch to resume from.
  void keep() { kept_ = resumable_; }
  // The output so far, for the malware check before commit().
  int fd() const { return fd_; }

 private:
  fs::path dest_;
  std::uint32_t mode_;
  std::string tmp_;
  int fd_ = -1;
  bool resumable_ = false;
  std::uint64_t existing_ = 0;
  std::uint64_t end_ = 0;      // where the next write() goes
  std::uint64_t flushed_ = 0;  // bytes before it whose disk writes were started
  bool committed_ = false;
  bool kept_ = false;
};

std::string server_name(const transport::Endpoint& e) {
  return e.kind + " server at " + e.address();
}

[[noreturn]] void raise_reply_error(const protocol::ErrorReply& error,
                                    const transport::Endpoint& endpoint) {
  const std::string who = server_name(endpoint);
  switch (error.status) {
    case protocol::Status::corrupt:
      throw IntegrityError("the " + who + " reports that its stored data is damaged");
    case protocol::Status::conflict:
      throw ConflictError("the " + who +
                          " holds a newer version (stored concurrently?): " + error.message);
    case protocol::Status::unauthorized:
      throw AuthError("the " + who + " refused this client: " + error.message +
                      " (`splitfs id` prints the fingerprint to enrol)");
    case protocol::Status::quota_exceeded:
      throw QuotaExceeded("the " + who + " refused to store more: " + error.message);
    case protocol::Status::busy:
      throw ServerUnavailable(endpoint.kind, endpoint.address(),
                              "the " + who + " is busy: " + error.message);
    default:
      throw ServerError("the " + who + " refused the request: " + error.message);
  }
}

template <class T>
T expect(protocol::Reply reply, const transport::Endpoint& endpoint) {
  if (auto* error = std::get_if<protocol::ErrorReply>(&reply))
    raise_reply_error(*error, endpoint);
  if (auto* value = std::get_if<T>(&reply))
    return std::move(*value);
  throw ServerError("the " + server_name(endpoint) + " sent an unexpected reply");
}

bool is_not_found(const protocol::Reply& reply) {
  const auto* error = std::get_if<protocol::ErrorReply>(&reply);
  return error && error->status == protocol::Status::not_found;
}

// Runs f(0) and f(1) at the same time, one per server (f(0) on one of `threads`), and returns both
// results. If either throws, both are finished before the first failure (in server order) is
// rethrown.
template <class F>
auto on_both(ThreadCache& threads, F&& f) {
  using R = decltype(f(std::size_t{0}));
  auto first = threads.run([&f] { return f(0); });
  std::exception_ptr failure;
  std::optional<R> second;
  try {
    second.emplace(f(1));
  } catch (...) {
    failure = std::current_exception();
  }
  std::optional<R> one;
  try {
    one.emplace(first.get());
  } catch (...) {
    failure = std::current_exception();
  }
  if (failure)
    std::rethrow_exception(failure);
  return std::array<R, 2>{std::move(*one), std::move(*second)};
}

Bytes record_associated(std::string_view kind, const Id& file, std::uint64_t version) {
  Bytes aad(kind.begin(), kind.end());
  aad.insert(aad.end(), file.begin(), file.end());
  for (int i = 7; i >= 0; --i)
    aad.push_back(static_cast<std::uint8_t>(version >> (8 * i)));
  return aad;
}

constexpr std::string_view kEntryDomain = "splitfs entry v1";
constexpr std::string_view kManifestDomain = "splitfs manifest v1";

void validate_name(const std::string& name) {
  if (name.empty())
    throw Error("a stored name cannot be empty");
  if (name.size() > kMaxNameBytes)
    throw Error("a stored name is limited to 4096 bytes");
  if (name.find('\0') != std::string::npos)
    throw Error("a stored name cannot contain NUL");
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Files that compress well are stored in the largest segments. Deduplication needs small shares
// (a changed byte costs its whole share), compression wants large ones (zstd finds more matches in
// a wider context), and for such a file the two agree: a changed share costs only its compressed
// size, so an edit adds about what it adds to an incompressible file in default segments, while
// text takes about half the space it would in default segments. The choice comes from a fixed
// sample of the content, so the same file stored again gets the same segments and deduplicates.
constexpr std::uint64_t kCompressibleMinBytes = 8u << 20;
constexpr double kCompressibleFraction = 0.5;
constexpr std::size_t kSampleBlocks = 16;
constexpr std::size_t kSampleBlockBytes = 4096;

std::uint32_t segment_bytes_for(int fd, std::uint64_t size, std::uint32_t configured) {
  if (size < kCompressibleMinBytes || configured >= kMaxSegmentBytes)
    return configured;
  Bytes sample(kSampleBlocks * kSampleBlockBytes);
  for (std::size_t i = 0; i < kSampleBlocks; ++i) {
    const std::uint64_t offset = (size - kSampleBlockBytes) / (kSampleBlocks - 1) * i;
    const ssize_t n = ::pread(fd, sample.data() + i * kSampleBlockBytes, kSampleBlockBytes,
                              static_cast<off_t>(offset));
    if (n != static_cast<ssize_t>(kSampleBlockBytes))
      return configured;  // the read proper reports the problem
  }
  return compressed_fraction(sample) < kCompressibleFraction ? kMaxSegmentBytes : configured;
}

// Plaintext shares of one batch of segments: shares[j][i] is segment i's share for server j.
using BatchShares = std::array<std::vector<Bytes>, kServers>;
using BatchIds = std::array<std::vector<Id>, kServers>;

}  // namespace

struct Client::Impl {
  ClientConfig config;
  KeySet keys;
  std::array<std::unique_ptr<transport::Transport>, kServers> servers;
  // A second connection to each server for whole-file transfers (none for the legacy servers,
  // which serve one connection at a time); connected on first use.
  std::array<std::unique_ptr<transport::Transport>, kServers> second_lane;
  VersionLog versions;
  std::mutex mutex;  // one operation at a time per Client
  ScanGate scan_gate{config.scan};
  ThreadCache threads;  // for the calls to both servers at once

  explicit Impl(const fs::path& home)
      : config(load_config(home)),
        keys(KeySet::derive(load_key(home))),
        servers{config.legacy ? transport::make_legacy_http_transport(config.https, config.timeouts)
                              : transport::make_https_transport(config.https, config.timeouts,
                                                                config.identity),
                config.legacy
                    ? transport::make_legacy_tcp_transport(config.tcp, config.timeouts)
                    : transport::make_tcp_transport(config.tcp, config.timeouts, config.identity)},
        versions(home / "state.sqlite") {
    if (!config.legacy) {
      second_lane = {
          transport::make_https_transport(config.https, config.timeouts, config.identity),
          transport::make_tcp_transport(config.tcp, config.timeouts, config.identity)};
    }
  }

  const transport::Endpoint& endpoint(std::size_t j) const { return servers[j]->endpoint(); }

  // Lanes for a transfer of `batches` batches: a short one gains nothing from a second connection
  // (and a server stopped in the middle of it leaves a simpler picture behind).
  std::size_t lanes(std::uint64_t batches) const {
    return second_lane[0] && batches >= kMinBatchesForLanes ? kLanes : 1;
  }
  transport::Transport& lane(std::size_t j, std::size_t lane) {
    return lane == 0 ? *servers[j] : *second_lane[j];
  }

  Id file_id(const std::string& name) const { return keyed_hash(keys.file_id, as_bytes(name)); }

  std::size_t segments_per_batch(std::uint32_t segment_bytes) const {
    return std::max<std::size_t>(1, kTransferBatchBytes / segment_bytes);
  }

  // ---- store ----

  // Hashes, encrypts and uploads the non-empty shares of one server; returns their ids in order
  // (kEmptyShare for empty shares). `put` is this lane's and server's request, kept from batch to
  // batch so that its buffers are reused rather than allocated (and faulted in) again.
  std::vector<Id> upload(std::size_t j, std::size_t on, const std::vector<Bytes>& plain,
                         protocol::Request& request) {
    std::vector<Id> ids(plain.size(), kEmptyShare);
    protocol::HasShares has;
    std::vector<std::size_t> first_of;  // index in `plain` of each id asked about
    std::unordered_set<Id, IdHash> asked;
    for (std::size_t i = 0; i < plain.size(); ++i) {
      if (plain[i].empty())
        continue;
      ids[i] = share_id(keys, plain[i]);
      if (asked.insert(ids[i]).second) {
        has.ids.push_back(ids[i]);
        first_of.push_back(i);
      }
    }
    if (has.ids.empty())
      return ids;
    const auto presence = expect<protocol::Presence>(lane(j, on).call(has), endpoint(j));
    if (presence.present.size() != has.ids.size()) {
      throw ServerError("the " + server_name(endpoint(j)) + " sent an unexpected reply");
    }
    if (!std::holds_alternative<protocol::PutShares>(request))
      request.emplace<protocol::PutShares>();
    auto& put = std::get<protocol::PutShares>(request);
    std::size_t sending = 0;
    for (std::size_t k = 0; k < has.ids.size(); ++k) {
      if (presence.present[k])
        continue;
      if (sending == put.shares.size())
        put.shares.emplace_back();
      protocol::ShareBlob& blob = put.shares[sending++];
      blob.id = has.ids[k];
      seal_share(keys, blob.id, plain[first_of[k]], blob.data);
    }
    put.shares.resize(sending);
    if (sending > 0)
      expect<protocol::Empty>(lane(j, on).call(request), endpoint(j));
    return ids;
  }

  std::uint64_t remote_version(std::size_t j, const Id& file) {
    protocol::Reply reply = servers[j]->call(protocol::GetFileInfo{file});
    if (is_not_found(reply))
      return 0;
    return expect<protocol::FileInfo>(std::move(reply), endpoint(j)).version;
  }

  void store(const fs::path& path, const std::string& name, const ProgressHandler& progress = {}) {
    validate_name(name);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0)
      throw LocalIoError("cannot read " + path.string() + ": " + errno_text());
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      throw LocalIoError(path.string() + " is not a regular file");
    }
    // A small file is scanned before anything reaches a server. A large one is scanned beside its
    // upload (the scan reads the file on its own, from the page cache): its shares may reach the
    // servers before the verdict, but only the commit makes them a file, and it waits for the
    // verdict; a blocked file's shares stay unreferenced until compaction removes them.
    ScanGate::Scanned scanned;
    std::future<ScanGate::Scanned> scanning;
    if (static_cast<std::uint64_t>(st.st_size) < kScanFirstBytes || !scan_gate.enabled()) {
      scanned = scan_gate.check_store(fd.get(), path, name);
    } else {
      scanning = std::async(std::launch::async,
                            [&] { return scan_gate.check_store(fd.get(), path, name); });
    }
    // A blocked verdict stops the upload as soon as it is known.
    auto verdict_if_ready = [&] {
      if (scanning.valid() &&
          scanning.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
        scanned = scanning.get();
      }
    };
    const Id file = file_id(name);
    const auto remote = on_both(threads, [&](std::size_t j) { return remote_version(j, file); });
    const std::uint64_t version = std::max({remote[0], remote[1], versions.seen(file)}) + 1;

    Manifest manifest;
    manifest.entry =
        Entry{name,
              static_cast<std::uint64_t>(st.st_size),
              version,
              now_ns(),
              static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec,
              static_cast<std::uint32_t>(st.st_mode & 07777)};
    manifest.segment_bytes = segment_bytes_for(fd.get(), manifest.entry.size, config.segment_bytes);
    const std::uint64_t segments = manifest.segment_count();
    manifest.shares.reserve(segments * kServers);

    const std::size_t per_batch = segments_per_batch(manifest.segment_bytes);
    Bytes buffer(std::min<std::uint64_t>(per_batch * manifest.segment_bytes, manifest.entry.size));
    const std::size_t lanes = this->lanes((segments + per_batch - 1) / per_batch);
    // Buffers reused from batch to batch: the striped shares of each batch in flight and of the
    // one being read (lanes + 1), and each lane's put request to each server.
    std::vector<std::shared_ptr<BatchShares>> batches(lanes + 1);
    for (auto& b : batches)
      b = std::make_shared<BatchShares>();
    std::array<std::array<protocol::Request, kServers>, kLanes> puts;
    std::deque<std::future<BatchIds>> inflight;
    auto collect = [&] {
      const BatchIds ids = inflight.front().get();
      inflight.pop_front();
      for (std::size_t i = 0; i < ids[0].size(); ++i) {
        for (std::size_t j = 0; j < kServers; ++j)
          manifest.shares.push_back(ids[j][i]);
      }
      if (progress) {
        const std::uint64_t stored = manifest.shares.size() / kServers;
        progress({name, std::min(manifest.entry.size, stored * manifest.segment_bytes),
                  manifest.entry.size, 0});
      }
    };
    for (std::uint64_t s = 0; s < segments; s += per_batch) {
      const std::size_t count =
          static_cast<std::size_t>(std::min<std::uint64_t>(per_batch, segments - s));
      const std::size_t bytes = static_cast<std::size_t>(
          std::min<std::uint64_t>(count * std::uint64_t{manifest.segment_bytes},
                                  manifest.entry.size - s * manifest.segment_bytes));
      if (!read_fully(fd.get(), buffer.data(), bytes)) {
        throw LocalIoError("cannot read " + path.string() + " (did it shrink while being stored?)");
      }
      // Batch b - (lanes + 1), the last user of this slot, was collected: at most `lanes` are in
      // flight.
      const auto& batch = batches[(s / per_batch) % batches.size()];
      for (auto& shares : *batch)
        shares.resize(count);
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t offset = i * manifest.segment_bytes;
        const std::size_t length = std::min<std::size_t>(manifest.segment_bytes, bytes - offset);
        std::array<Bytes, kServers> shares{std::move((*batch)[0][i]), std::move((*batch)[1][i])};
        stripe(ByteView(buffer.data() + offset, length), shares);
        for (std::size_t j = 0; j < kServers; ++j)
          (*batch)[j][i] = std::move(shares[j]);
      }
      if (inflight.size() == lanes)
        collect();
      verdict_if_ready();
      // Batch b and batch b + lanes never overlap: the first is collected before the second
      // starts, so each lane carries one batch at a time.
      const std::size_t on = (s / per_batch) % lanes;
      inflight.push_back(std::async(std::launch::async, [this, batch, on, &puts] {
        return on_both(threads,
                       [&](std::size_t j) { return upload(j, on, (*batch)[j], puts[on][j]); });
      }));
    }
    while (!inflight.empty())
      collect();
    if (scanning.valid())
      scanned = scanning.get();
    scan_gate.confirm_unchanged(fd.get(), path, scanned);
    commit(file, manifest);
    versions.raise(file, version);
  }

  void commit(const Id& file, const Manifest& manifest) {
    const std::uint64_t version = manifest.entry.version;
    const Bytes entry = seal_record(keys.record, record_associated(kEntryDomain, file, version),
                                    encode_entry(manifest.entry));
    const Bytes sealed = seal_record(keys.record, record_associated(kManifestDomain, file, version),
                                     encode_manifest(manifest));
    on_both(threads, [&](std::size_t j) {
      protocol::Commit commit{file, version, {}, entry, sealed};
      for (std::uint64_t s = 0; s < manifest.segment_count(); ++s) {
        const Id& id = manifest.shares[s * kServers + j];
        if (id == kEmptyShare)
          continue;
        const std::size_t length = share_length(manifest.segment_length(s), j);
        commit.refs.push_back({id, static_cast<std::uint32_t>(chunk_count(length))});
      }
      expect<protocol::Empty>(servers[j]->call(commit), endpoint(j));
      return true;
    });
  }

  // ---- fetch ----

  struct Resolved {
    Id file{};
    Manifest manifest;
  };

  // The current manifest of name, checked: both servers hold the same version, it decrypts and
  // names this file, and it is not older than any version this client has seen.
  Resolved resolve(const std::string& name) {
    validate_name(name);
    Resolved out;
    out.file = file_id(name);
    const auto records =
        on_both(threads, [&](std::size_t j) -> std::optional<protocol::FileRecord> {
          protocol::Reply reply = servers[j]->call(protocol::GetFile{out.file});
          if (is_not_found(reply))
            return std::nullopt;
          return expect<protocol::FileRecord>(std::move(reply), endpoint(j));
        });
    if (!records[0] && !records[1])
      throw NotFound("no stored file named '" + name + "'");
    for (std::size_t j = 0; j < kServers; ++j) {
      if (!records[j]) {
        throw IntegrityError("'" + name + "' is only partly stored: the " +
                             server_name(endpoint(j)) + " has no record of it; store it again");
      }
    }
    if (records[0]->version != records[1]->version ||
        records[0]->manifest != records[1]->manifest) {
      throw IntegrityError("the servers disagree about '" + name + "' (HTTPS has version " +
                           std::to_string(records[0]->version) + ", TCP version " +
                           std::to_string(records[1]->version) +
                           "): an interrupted store or a server serving old data; store it again");
    }
    const std::uint64_t version = records[0]->version;
    Bytes plain;
    if (!open_record(keys.record, record_associated(kManifestDomain, out.file, version),
                     records[0]->manifest, plain) ||
        decode_manifest(plain, out.manifest) || out.manifest.entry.name != name ||
        out.manifest.entry.version != version || out.manifest.servers != kServers) {
      throw IntegrityError("the manifest of '" + name + "' failed verification");
    }
    const std::uint64_t seen = versions.seen(out.file);
    if (version < seen) {
      throw IntegrityError("the servers offer version " + std::to_string(version) + " of '" + name +
                           "' but version " + std::to_string(seen) +
                           " was stored or fetched before: old data is being served (rollback)");
    }
    return out;
  }

  // Downloads and verifies one server's shares of segments [first, first + count) into `plain`
  // (whose buffers are reused).
  void download(std::size_t j, std::size_t on, const Resolved& r, std::uint64_t first,
                std::size_t count, std::vector<Bytes>& plain) {
    const Manifest& m = r.manifest;
    plain.resize(count);
    protocol::GetShares get;
    std::vector<std::size_t> wanted;
    for (std::size_t i = 0; i < count; ++i) {
      plain[i].clear();
      const Id& id = m.shares[(first + i) * kServers + j];
      if (id == kEmptyShare)
        continue;
      get.ids.push_back(id);
      wanted.push_back(i);
    }
    if (get.ids.empty())
      return;
    const std::string what = "data of '" + m.entry.name + "' from the " + server_name(endpoint(j));
    protocol::Reply reply = lane(j, on).call(get);
    if (is_not_found(reply))
      throw IntegrityError(what + " is missing");
    const auto shares = expect<protocol::Shares>(std::move(reply), endpoint(j));
    if (shares.blobs.size() != get.ids.size())
      throw IntegrityError(what + " is incomplete");
    for (std::size_t k = 0; k < wanted.size(); ++k) {
      const std::size_t i = wanted[k];
      const std::size_t length = share_length(m.segment_length(first + i), j);
      if (!open_share(keys, get.ids[k], shares.blobs[k], plain[i], length) ||
          plain[i].size() != length) {
        throw IntegrityError(what + " failed verification (altered, swapped or foreign data)");
      }
    }
  }

  // Calls sink(segment index, segment bytes) for segments [first, last) in order, downloading the
  // next batches (one per lane) while the current one is handed out.
  void for_each_segment(const Resolved& r, std::uint64_t first, std::uint64_t last,
                        const std::function<void(std::uint64_t, ByteView)>& sink) {
    const Manifest& m = r.manifest;
    const std::size_t per_batch = segments_per_batch(m.segment_bytes);
    const std::size_t lanes = this->lanes((last - first + per_batch - 1) / per_batch);
    // Shares of the batches downloading and of the one handed out, reused from batch to batch:
    // batch k fills slot k % (lanes + 1) once batch k - lanes was taken, and the one taken before
    // it (k - lanes - 1) is handed out by then.
    std::vector<BatchShares> slots(lanes + 1);
    std::deque<std::future<BatchShares*>> ahead;
    std::uint64_t next = first;
    std::size_t started = 0;
    // Batch k goes on lane k % lanes; it starts only once batch k - lanes was taken.
    auto start_more = [&] {
      while (next < last && ahead.size() < lanes) {
        const std::uint64_t s = next;
        const std::size_t count =
            static_cast<std::size_t>(std::min<std::uint64_t>(per_batch, last - s));
        const std::size_t on = started % lanes;
        BatchShares* slot = &slots[started++ % slots.size()];
        ahead.push_back(std::async(std::launch::async, [this, &r, s, count, on, slot] {
          on_both(threads, [&](std::size_t j) {
            download(j, on, r, s, count, (*slot)[j]);
            return true;
          });
          return slot;
        }));
        next += count;
      }
    };
    Bytes segment(m.segment_bytes);
    start_more();
    for (std::uint64_t s = first; s < last; s += per_batch) {
      const BatchShares& batch = *ahead.front().get();
      ahead.pop_front();
      start_more();
      for (std::size_t i = 0; i < batch[0].size(); ++i) {
        const std::size_t length = m.segment_length(s + i);
        const std::array<ByteView, kServers> shares{batch[0][i], batch[1][i]};
        unstripe(shares, MutableByteView(segment.data(), length));
        sink(s + i, ByteView(segment.data(), length));
      }
    }
  }

  fs::path fetch(const std::string& name, const fs::path& dest,
                 const ProgressHandler& progress = {}) {
    fs::path target = dest;
    if (fs::is_directory(dest)) {
      const fs::path base = fs::path(name).filename();
      if (base.empty() || base == "." || base == "..") {
        throw Error("'" + name + "' has no file name to fetch into a folder; give a file path");
      }
      target = dest / base;
    }
    const Resolved r = resolve(name);
    PendingOutput output(target, r.manifest.entry.mode);
    const std::uint64_t first = verified_segments(r.manifest, output);
    // The malware check reads the output while it is written, waiting for bytes not there yet;
    // the rename into place waits for its verdict. Leaving early abandons the source first, so
    // the scan stops instead of waiting for bytes that will not come.
    std::optional<scan::GrowingFileSource> source;
    std::future<void> scanning;
    if (scan_gate.enabled()) {
      source.emplace(output.fd(), r.manifest.entry.size, target);
      source->written(first * r.manifest.segment_bytes);
      scanning =
          std::async(std::launch::async, [&] { scan_gate.check_fetch(*source, name, target); });
    }
    const auto abandon = [](scan::GrowingFileSource* s) {
      if (s != nullptr)
        s->abandon();
    };
    std::unique_ptr<scan::GrowingFileSource, decltype(abandon)> stop_scan(
        source ? &*source : nullptr, abandon);
    try {
      for_each_segment(r, first, r.manifest.segment_count(), [&](std::uint64_t s, ByteView bytes) {
        output.write(bytes);
        if (source)
          source->written(s * r.manifest.segment_bytes + bytes.size());
        if (progress) {
          const Manifest& m = r.manifest;
          progress(
              {name, s * m.segment_bytes + bytes.size(), m.entry.size, first * m.segment_bytes});
        }
      });
    } catch (const ServerUnavailable&) {
      output.keep();
      throw;
    }
    stop_scan.reset();  // no more bytes come: the scan reads what is there, never waits
    if (scanning.valid())
      scanning.get();
    output.commit();
    versions.raise(r.file, r.manifest.entry.version);
    return target;
  }

  // How many leading segments of an interrupted fetch's output are the manifest's: each segment's
  // shares must hash to the ids the manifest names. Keeps those, drops the rest.
  std::uint64_t verified_segments(const Manifest& m, PendingOutput& output) {
    std::uint64_t s = 0;
    if (output.existing() > 0) {
      Bytes segment(m.segment_bytes);
      std::array<Bytes, kServers> shares;
      for (; s < m.segment_count(); ++s) {
        const std::size_t length = m.segment_length(s);
        if (s * m.segment_bytes + length > output.existing() ||
            !output.read_at(s * m.segment_bytes, segment.data(), length)) {
          break;
        }
        stripe(ByteView(segment.data(), length), shares);
        bool same = true;
        for (std::size_t j = 0; j < kServers && same; ++j) {
          const Id& expected = m.shares[s * kServers + j];
          same = shares[j].empty()
                     ? expected == kEmptyShare
                     : expected != kEmptyShare && share_id(keys, shares[j]) == expected;
        }
        if (!same)
          break;
      }
    }
    output.keep_prefix(s * m.segment_bytes);
    return s;
  }

  VerifyResult verify(const std::string& name, const ProgressHandler& progress) {
    const Resolved r = resolve(name);
    const Manifest& m = r.manifest;
    const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> hash(EVP_MD_CTX_new(),
                                                                       &EVP_MD_CTX_free);
    if (!hash || EVP_DigestInit_ex(hash.get(), EVP_sha256(), nullptr) != 1)
      throw Error("cannot start a SHA-256 hash");
    std::uint64_t done = 0;
    for_each_segment(r, 0, m.segment_count(), [&](std::uint64_t, ByteView bytes) {
      if (EVP_DigestUpdate(hash.get(), bytes.data(), bytes.size()) != 1)
        throw Error("cannot hash '" + name + "'");
      done += bytes.size();
      if (progress)
        progress({name, done, m.entry.size, 0});
    });
    if (done != m.entry.size)
      throw IntegrityError("'" + name + "' rebuilt to " + std::to_string(done) + " bytes, not " +
                           std::to_string(m.entry.size));
    std::array<std::uint8_t, EVP_MAX_MD_SIZE> digest{};
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(hash.get(), digest.data(), &length) != 1)
      throw Error("cannot hash '" + name + "'");
    static constexpr char kHex[] = "0123456789abcdef";
    VerifyResult out;
    for (unsigned int i = 0; i < length; ++i) {
      out.sha256.push_back(kHex[digest[i] >> 4]);
      out.sha256.push_back(kHex[digest[i] & 15]);
    }
    const Entry& e = m.entry;
    out.entry = {e.name, e.size, e.version, e.stored_at_ns, chunk_count(e.size)};
    out.segments = m.segment_count();
    versions.raise(r.file, e.version);
    return out;
  }

  std::vector<std::uint8_t> read(const std::string& name, std::uint64_t offset,
                                 std::uint64_t length) {
    const Resolved r = resolve(name);
    const Manifest& m = r.manifest;
    if (offset >= m.entry.size || length == 0)
      return {};
    const std::uint64_t end = offset + std::min(length, m.entry.size - offset);
    std::vector<std::uint8_t> out;
    out.reserve(static_cast<std::size_t>(end - offset));
    for_each_segment(r, offset / m.segment_bytes, (end - 1) / m.segment_bytes + 1,
                     [&](std::uint64_t s, ByteView bytes) {
                       const std::uint64_t start = s * m.segment_bytes;
                       const std::uint64_t from = std::max(start, offset) - start;
                       const std::uint64_t to =
                           std::min<std::uint64_t>(start + bytes.size(), end) - start;
                       out.insert(out.end(), bytes.begin() + static_cast<std::ptrdiff_t>(from),
                                  bytes.begin() + static_cast<std::ptrdiff_t>(to));
                     });
    versions.raise(r.file, m.entry.version);
    return out;
  }

  // ---- listing and the rest ----

  std::vector<ListEntry> list() {
    const auto lists = on_both(threads, [&](std::size_t j) {
      return expect<protocol::FileList>(servers[j]->call(protocol::ListFiles{}), endpoint(j));
    });
    std::map<Id, const protocol::FileListItem*> newest;
    for (const auto& listing : lists) {
      for (const auto& item : listing.files) {
        auto& slot = newest[item.file];
        if (!slot || slot->version < item.version)
          slot = &item;
      }
    }
    std::vector<ListEntry> out;
    for (const auto& [file, item] : newest) {
      Bytes plain;
      Entry entry;
      if (!open_record(keys.record, record_associated(kEntryDomain, file, item->version),
                       item->entry, plain) ||
          decode_entry(plain, entry) || entry.version != item->version) {
        throw IntegrityError("a listing entry from the servers failed verification");
      }
      out.push_back(
          {entry.name, entry.size, entry.version, entry.stored_at_ns, chunk_count(entry.size)});
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    return out;
  }

  void remove(const std::string& name) {
    validate_name(name);
    const Id file = file_id(name);
    const auto removed = on_both(threads, [&](std::size_t j) {
      protocol::Reply reply = servers[j]->call(protocol::RemoveFile{file});
      if (is_not_found(reply))
        return false;
      expect<protocol::Empty>(std::move(reply), endpoint(j));
      return true;
    });
    if (!removed[0] && !removed[1])
      throw NotFound("no stored file named '" + name + "'");
  }

  FileStat stat(const std::string& name) {
    const Resolved r = resolve(name);
    const auto infos = on_both(threads, [&](std::size_t j) {
      return expect<protocol::FileInfo>(servers[j]->call(protocol::GetFileInfo{r.file}),
                                        endpoint(j));
    });
    const Entry& e = r.manifest.entry;
    FileStat out;
    out.entry = {e.name, e.size, e.version, e.stored_at_ns, chunk_count(e.size)};
    out.mode = e.mode;
    out.mtime_ns = e.mtime_ns;
    out.segment_bytes = r.manifest.segment_bytes;
    for (std::size_t j = 0; j < kServers; ++j) {
      out.servers.push_back({endpoint(j).kind, endpoint(j).address(), infos[j].version,
                             infos[j].shares, infos[j].chunks, infos[j].stored_bytes});
    }
    return out;
  }
  // ======== Objects for the mount (fs/): everything below is used only by the object calls
  // ========
  //
  // An object key lives under a name that starts with NUL, which validate_name() refuses, so no
  // user name maps to the same file id; list() leaves such names out. A commit goes to both
  // servers at once, and the HTTPS server arbitrates between concurrent writers (its version check
  // is the compare-and-swap): a commit it refuses has failed, whatever the TCP server said. A loser
  // can so leave its record on the TCP server; the winner then finds the TCP server in conflict
  // and commits its content once more above both (settle_split), and until then readers take the
  // HTTPS server's record of an equal version.

  static constexpr std::string_view kObjectPrefix{"\0splitfs-object\0", 16};
  static constexpr std::size_t kMaxObjectKeyBytes = 1024;
  static constexpr std::size_t kSendWithoutAskingBytes = 64u << 10;
  // Times a commit that split the servers is committed again before the TCP server's conflict is
  // reported.
  static constexpr int kMaxSettleAttempts = 3;
  static constexpr std::uint64_t kMaxObjectVersion = std::uint64_t{1} << 62;

  std::atomic<std::uint64_t> object_bytes_sent{0};
  std::atomic<std::uint64_t> object_shares_sent{0};
  std::atomic<std::uint64_t> object_shares_skipped{0};
  std::atomic<std::uint64_t> object_bytes_received{0};
  std::atomic<std::uint64_t> object_commits{0};
  // Cleared when a server answers a commit batch unsupported: commit_objects() leaves every
  // object to commit_object() from then on.
  bool batch_commits = true;
  // Highest version recorded in `versions` per object file id this session, so that repeated
  // opens of an unchanged object do not write the state database.
  std::map<Id, std::uint64_t> object_seen;

  static bool is_object_name(std::string_view name) { return name.starts_with(kObjectPrefix); }

  static std::string object_name(const std::string& key) {
    if (key.empty() || key.size() > kMaxObjectKeyBytes || key.find('\0') != std::string::npos) {
      throw Error("an object key must be 1 to 1024 bytes without NUL");
    }
    std::string name(kObjectPrefix);
    name += key;
    return name;
  }

  void note_seen(const Id& file, std::uint64_t version) { note_seen_all({{file, version}}); }

  void note_seen_all(std::vector<std::pair<Id, std::uint64_t>> seen) {
    std::erase_if(seen, [&](const auto& s) { return s.second <= object_seen[s.first]; });
    versions.raise_all(seen);
    for (const auto& [file, version] : seen)
      object_seen[file] = std::max(object_seen[file], version);
  }

  // Groups consecutive items into batches of at most kBatchFileBytes (and kMaxBatchItems) bytes;
  // calls run(first, count) for each.
  template <class Size, class Run>
  static void in_batches(std::size_t n, Size size_of, Run run) {
    for (std::size_t first = 0; first < n;) {
      std::size_t count = 0;
      std::size_t bytes = 0;
      while (first + count < n && count < protocol::kMaxBatchItems / 2 &&
             (count == 0 || bytes + size_of(first + count) <= kBatchFileBytes)) {
        bytes += size_of(first + count);
        ++count;
      }
      run(first, count);
      first += count;
    }
  }

  // upload() with traffic counted: ids of one server's shares, sending only those it lacks.
  std::vector<Id> stage_on(std::size_t j, const std::vector<Bytes>& plain) {
    std::vector<Id> ids(plain.size(), kEmptyShare);
    protocol::HasShares has;
    std::vector<std::size_t> first_of;
    std::unordered_set<Id, IdHash> asked;
    for (std::size_t i = 0; i < plain.size(); ++i) {
      if (plain[i].empty())
        continue;
      ids[i] = share_id(keys, plain[i]);
      if (asked.insert(ids[i]).second) {
        has.ids.push_back(ids[i]);
        first_of.push_back(i);
      }
    }
    if (has.ids.empty())
      return ids;
    // Asking which shares the server holds costs a round trip; for a few small shares sending
    // them outright is cheaper (a put of a held share is a no-op on the server). One whole share
    // of a default segment is not small: it is worth asking about.
    std::size_t plain_bytes = 0;
    for (const std::size_t i : first_of)
      plain_bytes += plain[i].size();
    protocol::Presence presence;
    if (plain_bytes < kSendWithoutAskingBytes) {
      presence.present.assign(has.ids.size(), false);
    } else {
      presence = expect<protocol::Presence>(servers[j]->call(has), endpoint(j));
    }
    if (presence.present.size() != has.ids.size())
      throw ServerError("the " + server_name(endpoint(j)) + " sent an unexpected reply");
    protocol::PutShares put;
    std::uint64_t bytes = 0;
    for (std::size_t k = 0; k < has.ids.size(); ++k) {
      if (presence.present[k]) {
        object_shares_skipped.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      put.shares.push_back({has.ids[k], seal_share(keys, has.ids[k], plain[first_of[k]])});
      bytes += put.shares.back().data.size();
    }
    if (!put.shares.empty()) {
      expect<protocol::Empty>(servers[j]->call(put), endpoint(j));
      object_bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
      object_shares_sent.fetch_add(put.shares.size(), std::memory_order_relaxed);
    }
    return ids;
  }

  std::vector<SegmentRef> stage_segments(std::span<const ByteView> segments) {
    std::vector<SegmentRef> refs(segments.size());
    in_batches(
        segments.size(), [&](std::size_t i) { return segments[i].size(); },
        [&](std::size_t first, std::size_t count) {
          BatchShares plain;
          for (auto& shares : plain)
            shares.resize(count);
          for (std::size_t i = 0; i < count; ++i) {
            const ByteView segment = segments[first + i];
            if (segment.size() > config.segment_bytes)
              throw Error("a segment is longer than the configured segment size");
            std::array<Bytes, kServers> shares;
            stripe(segment, shares);
            for (std::size_t j = 0; j < kServers; ++j)
              plain[j][i] = std::move(shares[j]);
          }
          const auto ids = on_both(threads, [&](std::size_t j) { return stage_on(j, plain[j]); });
          for (std::size_t i = 0; i < count; ++i) {
            SegmentRef& ref = refs[first + i];
            ref.length = static_cast<std::uint32_t>(segments[first + i].size());
            for (std::size_t j = 0; j < kServers; ++j)
              ref.shares[j] = ids[j][i];
          }
        });
    return refs;
  }

  std::vector<Bytes> read_segments(std::span<const SegmentRef> refs) {
    std::vector<Bytes> out(refs.size());
    // A server's shares of one batch, opened where they arrived.
    struct Opened {
      std::vector<Bytes> blobs;
      std::vector<ByteView> plain;
    };
    in_batches(
        refs.size(), [&](std::size_t i) { return std::size_t{refs[i].length}; },
        [&](std::size_t first, std::size_t count) {
          const auto shares = on_both(threads, [&](std::size_t j) {
            Opened opened;
            opened.plain.resize(count);
            protocol::GetShares get;
            std::vector<std::size_t> wanted;
            for (std::size_t i = 0; i < count; ++i) {
              const SegmentRef& ref = refs[first + i];
              if (ref.shares[j] == kEmptyShare)
                continue;
              get.ids.push_back(ref.shares[j]);
              wanted.push_back(i);
            }
            if (get.ids.empty())
              return opened;
            const std::string what = "object data from the " + server_name(endpoint(j));
            protocol::Reply reply = servers[j]->call(get);
            if (is_not_found(reply))
              throw IntegrityError(what + " is missing");
            auto got = expect<protocol::Shares>(std::move(reply), endpoint(j));
            if (got.blobs.size() != get.ids.size())
              throw IntegrityError(what + " is incomplete");
            std::uint64_t bytes = 0;
            for (std::size_t k = 0; k < wanted.size(); ++k) {
              const std::size_t i = wanted[k];
              bytes += got.blobs[k].size();
              const std::size_t length = share_length(refs[first + i].length, j);
              const auto plain = open_share_in_place(keys, get.ids[k], got.blobs[k], length);
              if (!plain || plain->size() != length)
                throw IntegrityError(what + " failed verification");
              opened.plain[i] = *plain;
            }
            object_bytes_received.fetch_add(bytes, std::memory_order_relaxed);
            opened.blobs = std::move(got.blobs);  // the views stay valid: the blobs do not move
            return opened;
          });
          for (std::size_t i = 0; i < count; ++i) {
            const SegmentRef& ref = refs[first + i];
            for (std::size_t j = 0; j < kServers; ++j) {
              if ((ref.shares[j] == kEmptyShare) != (share_length(ref.length, j) == 0))
                throw IntegrityError("an object segment names a share that cannot exist");
            }
            const std::array<ByteView, kServers> parts{shares[0].plain[i], shares[1].plain[i]};
            unstripe(parts, ref.length, out[first + i]);
          }
        });
    return out;
  }

  StoredObject to_object(const std::string& key, const Manifest& m) const {
    StoredObject out{
        key, m.entry.version, m.entry.size, m.segment_bytes, m.entry.mode, m.entry.mtime_ns, {}};
    out.segments.resize(static_cast<std::size_t>(m.segment_count()));
    for (std::size_t s = 0; s < out.segments.size(); ++s) {
      out.segments[s].length = static_cast<std::uint32_t>(m.segment_length(s));
      for (std::size_t j = 0; j < kServers; ++j)
        out.segments[s].shares[j] = m.shares[s * kServers + j];
    }
    return out;
  }

  StoredObject open_object(const std::string& key, std::uint64_t min_version) {
    const std::string name = object_name(key);
    const Id file = file_id(name);
    const auto records =
        on_both(threads, [&](std::size_t j) -> std::optional<protocol::FileRecord> {
          protocol::Reply reply = servers[j]->call(protocol::GetFile{file});
          if (is_not_found(reply))
            return std::nullopt;
          return expect<protocol::FileRecord>(std::move(reply), endpoint(j));
        });
    if (!records[0] && !records[1])
      throw NotFound("no stored object '" + key + "'");
    // At equal versions the HTTPS server's record wins: it arbitrates commits, so a different
    // record of that version on the TCP server is one that lost there (commit_object).
    const std::size_t newest =
        !records[1] || (records[0] && records[0]->version >= records[1]->version) ? 0 : 1;
    const protocol::FileRecord& record = *records[newest];
    Bytes plain;
    Manifest m;
    if (!open_record(keys.record, record_associated(kManifestDomain, file, record.version),
                     record.manifest, plain) ||
        decode_manifest(plain, m) || m.entry.name != name || m.entry.version != record.version ||
        m.servers != kServers) {
      throw IntegrityError("the manifest of object '" + key + "' failed verification");
    }
    const std::uint64_t floor = std::max(min_version, versions.seen(file));
    if (m.entry.version < floor) {
      throw IntegrityError("the servers offer version " + std::to_string(m.entry.version) +
                           " of object '" + key + "' but version " + std::to_string(floor) +
                           " exists: old data is being served (rollback)");
    }
    note_seen(file, m.entry.version);
    return to_object(key, m);
  }

  std::uint64_t object_version(const std::string& key) {
    return remote_version(0, file_id(object_name(key)));
  }

  // The manifest of version expected + 1 of key made of segments; throws for an invalid object.
  Manifest object_manifest(const std::string& key, std::uint64_t expected,
                           const ObjectAttributes& attributes,
                           std::span<const SegmentRef> segments) const {
    Manifest m;
    m.entry = Entry{object_name(key), attributes.size,     expected + 1,
                    now_ns(),         attributes.mtime_ns, attributes.mode};
    m.segment_bytes = attributes.segment_bytes ? attributes.segment_bytes : config.segment_bytes;
    if (m.segment_bytes > kMaxSegmentBytes || m.segment_bytes % (kChunkBytes * kServers) != 0)
      throw Error("an object's segment size must be a multiple of 2048 up to 4 MiB");
    if (segments.size() != m.segment_count())
      throw Error("an object of " + std::to_string(attributes.size) + " bytes needs " +
                  std::to_string(m.segment_count()) + " segments, not " +
                  std::to_string(segments.size()));
    m.shares.reserve(segments.size() * kServers);
    for (std::size_t s = 0; s < segments.size(); ++s) {
      if (segments[s].length != m.segment_length(s))
        throw Error("segment " + std::to_string(s) + " of object '" + key +
                    "' has the wrong length");
      for (std::size_t j = 0; j < kServers; ++j)
        m.shares.push_back(segments[s].shares[j]);
    }
    return m;
  }

  StoredObject commit_object(const std::string& key, std::uint64_t expected,
                             const ObjectAttributes& attributes, std::vector<SegmentRef> segments) {
    const Id file = file_id(object_name(key));
    Manifest m = object_manifest(key, expected, attributes, segments);
    if (m.entry.version <= versions.seen(file)) {
      throw ConflictError("object '" + key + "' has a version newer than " +
                          std::to_string(expected));
    }
    const auto outcome = commit_on_both(file, m);
    if (outcome[0])
      std::rethrow_exception(outcome[0]);
    if (outcome[1]) {
      try {
        std::rethrow_exception(outcome[1]);
      } catch (const ConflictError&) {
        settle_split(file, m);
      }
    }
    note_seen(file, m.entry.version);
    object_commits.fetch_add(1, std::memory_order_relaxed);
    return to_object(key, m);
  }

  std::vector<std::optional<StoredObject>> commit_objects(std::span<const ObjectCommit> objects) {
    std::vector<std::optional<StoredObject>> out(objects.size());
    struct Item {
      std::size_t index;
      Id file;
      Manifest m;
    };
    std::vector<Item> items;
    std::vector<std::pair<Id, std::uint64_t>> seen;  // the versions committed
    for (std::size_t i = 0; i < objects.size() && batch_commits; ++i) {
      const ObjectCommit& o = objects[i];
      Item item{i, file_id(object_name(o.key)),
                object_manifest(o.key, o.expected, o.attributes, o.segments)};
      if (item.m.entry.version > versions.seen(item.file))
        items.push_back(std::move(item));
    }
    for (std::size_t first = 0; first < items.size(); first += protocol::kMaxBatchCommits) {
      const std::span<Item> part = std::span(items).subspan(
          first, std::min(protocol::kMaxBatchCommits, items.size() - first));
      std::array<protocol::CommitBatch, kServers> batches;
      for (const Item& item : part) {
        auto commits = sealed_commits(item.file, item.m);
        for (std::size_t j = 0; j < kServers; ++j)
          batches[j].commits.push_back(std::move(commits[j]));
      }
      const auto statuses = on_both(threads, [&](std::size_t j) -> std::vector<protocol::Status> {
        protocol::Reply reply = servers[j]->call(batches[j]);
        if (const auto* error = std::get_if<protocol::ErrorReply>(&reply);
            error && error->status == protocol::Status::unsupported) {
          return {};
        }
        auto got = expect<protocol::CommitOutcomes>(std::move(reply), endpoint(j));
        if (got.statuses.size() != part.size())
          throw ServerError("the " + server_name(endpoint(j)) + " answered a commit batch wrongly");
        return std::move(got.statuses);
      });
      if (statuses[0].empty() || statuses[1].empty()) {
        batch_commits = false;  // a server that takes commits one at a time
        break;
      }
      for (std::size_t k = 0; k < part.size(); ++k) {
        Item& item = part[k];
        if (statuses[0][k] != protocol::Status::ok)
          continue;
        if (statuses[1][k] == protocol::Status::conflict) {
          try {
            settle_split(item.file, item.m);
          } catch (const Error&) {
            continue;
          }
        } else if (statuses[1][k] != protocol::Status::ok) {
          continue;
        }
        seen.emplace_back(item.file, item.m.entry.version);
        object_commits.fetch_add(1, std::memory_order_relaxed);
        out[item.index] = to_object(objects[item.index].key, item.m);
      }
    }
    note_seen_all(seen);
    return out;
  }

  // The commit of m to each server, sealed for m.entry.version.
  std::array<protocol::Commit, kServers> sealed_commits(const Id& file, const Manifest& m) {
    const std::uint64_t version = m.entry.version;
    const Bytes entry = seal_record(keys.record, record_associated(kEntryDomain, file, version),
                                    encode_entry(m.entry));
    const Bytes sealed = seal_record(keys.record, record_associated(kManifestDomain, file, version),
                                     encode_manifest(m));
    std::array<protocol::Commit, kServers> out;
    for (std::size_t j = 0; j < kServers; ++j) {
      out[j] = protocol::Commit{file, version, {}, entry, sealed};
      for (std::uint64_t s = 0; s < m.segment_count(); ++s) {
        const Id& id = m.shares[s * kServers + j];
        if (id == kEmptyShare)
          continue;
        const std::size_t length = share_length(m.segment_length(s), j);
        out[j].refs.push_back({id, static_cast<std::uint32_t>(chunk_count(length))});
      }
    }
    return out;
  }

  // Sends m's commit to both servers at once (one round trip instead of two); returns each
  // server's failure, if any.
  std::array<std::exception_ptr, kServers> commit_on_both(const Id& file, const Manifest& m) {
    const auto commits = sealed_commits(file, m);
    std::array<std::exception_ptr, kServers> failed;
    const auto send = [&](std::size_t j) {
      try {
        expect<protocol::Empty>(servers[j]->call(commits[j]), endpoint(j));
      } catch (...) {
        failed[j] = std::current_exception();
      }
    };
    auto tcp = threads.run([&] { send(1); });
    send(0);
    tcp.get();
    return failed;
  }

  // The HTTPS server accepted m but the TCP server holds a version at least as new: a concurrent
  // writer that lost on the HTTPS server reached the TCP server first. m stands (the HTTPS server
  // arbitrates); to bring both servers to one version again, the same content is committed once
  // more as a version above both, HTTPS server first. m is updated to what was committed.
  void settle_split(const Id& file, Manifest& m) {
    for (int attempt = 0; attempt < kMaxSettleAttempts; ++attempt) {
      Manifest next = m;
      const std::uint64_t tcp = remote_version(1, file);
      if (tcp >= kMaxObjectVersion)
        throw ServerError("the " + server_name(endpoint(1)) + " reports an impossible version");
      next.entry.version = std::max(m.entry.version, tcp) + 1;
      const auto commits = sealed_commits(file, next);
      try {
        expect<protocol::Empty>(servers[0]->call(commits[0]), endpoint(0));
      } catch (const ConflictError&) {
        // Another writer already built on m at the HTTPS server: m stands, and the newer
        // version is that writer's to bring to the TCP server.
        return;
      }
      m = std::move(next);
      try {
        expect<protocol::Empty>(servers[1]->call(commits[1]), endpoint(1));
        return;
      } catch (const ConflictError&) {
        if (attempt + 1 == kMaxSettleAttempts)
          throw;
      }
    }
  }

  void remove_object(const std::string& key) {
    const Id file = file_id(object_name(key));
    const auto removed = on_both(threads, [&](std::size_t j) {
      protocol::Reply reply = servers[j]->call(protocol::RemoveFile{file});
      if (is_not_found(reply))
        return false;
      expect<protocol::Empty>(std::move(reply), endpoint(j));
      return true;
    });
    if (!removed[0] && !removed[1])
      throw NotFound("no stored object '" + key + "'");
  }

  FileStat stat_object(const std::string& key) {
    const StoredObject object = open_object(key, 0);
    const Id file = file_id(object_name(key));
    const auto infos = on_both(threads, [&](std::size_t j) {
      return expect<protocol::FileInfo>(servers[j]->call(protocol::GetFileInfo{file}), endpoint(j));
    });
    FileStat out;
    out.entry = {key, object.size, object.version, 0, chunk_count(object.size)};
    out.mode = object.mode;
    out.mtime_ns = object.mtime_ns;
    out.segment_bytes = object.segment_bytes;
    for (std::size_t j = 0; j < kServers; ++j) {
      out.servers.push_back({endpoint(j).kind, endpoint(j).address(), infos[j].version,
                             infos[j].shares, infos[j].chunks, infos[j].stored_bytes});
    }
    return out;
  }
  // ======== end of objects ========
};

fs::path Client::default_home() {
  if (const char* home = std::getenv("SPLITFS_HOME"); home && *home)
    return home;
  if (const char* home = std::getenv("HOME"); home && *home)
    return fs::path(home) / ".config" / "splitfs";
  throw ConfigError("neither SPLITFS_HOME nor HOME is set; pass --home");
}

Client::Client(const fs::path& home) : impl_(std::make_unique<Impl>(home)) {}
Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

void Client::store(const fs::path& path, const std::string& name) {
  std::lock_guard lock(impl_->mutex);
  impl_->store(path, name);
}

void Client::store(const fs::path& path, const std::string& name, const ProgressHandler& progress) {
  std::lock_guard lock(impl_->mutex);
  impl_->store(path, name, progress);
}

fs::path Client::fetch(const std::string& name, const fs::path& dest) {
  std::lock_guard lock(impl_->mutex);
  return impl_->fetch(name, dest);
}

fs::path Client::fetch(const std::string& name, const fs::path& dest,
                       const ProgressHandler& progress) {
  std::lock_guard lock(impl_->mutex);
  return impl_->fetch(name, dest, progress);
}

VerifyResult Client::verify(const std::string& name, const ProgressHandler& progress) {
  std::lock_guard lock(impl_->mutex);
  return impl_->verify(name, progress);
}

std::vector<std::uint8_t> Client::read(const std::string& name, std::uint64_t offset,
                                       std::uint64_t length) {
  std::lock_guard lock(impl_->mutex);
  return impl_->read(name, offset, length);
}

std::vector<ListEntry> Client::list() {
  std::lock_guard lock(impl_->mutex);
  auto entries = impl_->list();
  // Objects (the mount's) are not files a user stored.
  std::erase_if(entries, [](const ListEntry& e) { return Impl::is_object_name(e.name); });
  return entries;
}

void Client::remove(const std::string& name) {
  std::lock_guard lock(impl_->mutex);
  impl_->remove(name);
}

FileStat Client::stat(const std::string& name) {
  std::lock_guard lock(impl_->mutex);
  return impl_->stat(name);
}

void Client::set_scanning(bool enabled) {
  impl_->scan_gate.set_enabled(enabled);
}

void Client::on_scan_warning(std::function<void(const ScanWarning&)> handler) {
  impl_->scan_gate.set_warning_handler(std::move(handler));
}

std::vector<ServerUsage> Client::df() {
  std::lock_guard lock(impl_->mutex);
  const auto stats = on_both(impl_->threads, [&](std::size_t j) {
    return expect<protocol::UsageStats>(impl_->servers[j]->call(protocol::GetStats{}),
                                        impl_->endpoint(j));
  });
  std::vector<ServerUsage> out;
  for (std::size_t j = 0; j < kServers; ++j) {
    const protocol::UsageStats& s = stats[j];
    out.push_back({impl_->endpoint(j).kind, impl_->endpoint(j).address(), s.files, s.logical_bytes,
                   s.share_logical_bytes, s.share_bytes, s.garbage_bytes, s.disk_bytes});
  }
  return out;
}

// ---- Objects ----

std::uint32_t Client::segment_bytes() const {
  return impl_->config.segment_bytes;
}

StoredObject Client::open_object(const std::string& key, std::uint64_t min_version) {
  std::lock_guard lock(impl_->mutex);
  return impl_->open_object(key, min_version);
}

std::uint64_t Client::object_version(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  return impl_->object_version(key);
}

std::vector<SegmentRef> Client::stage_segments(
    std::span<const std::span<const std::uint8_t>> segments) {
  std::lock_guard lock(impl_->mutex);
  return impl_->stage_segments(segments);
}

std::vector<std::vector<std::uint8_t>> Client::read_segments(std::span<const SegmentRef> refs) {
  std::lock_guard lock(impl_->mutex);
  return impl_->read_segments(refs);
}

StoredObject Client::commit_object(const std::string& key, std::uint64_t expected,
                                   const ObjectAttributes& attributes,
                                   std::vector<SegmentRef> segments) {
  std::lock_guard lock(impl_->mutex);
  return impl_->commit_object(key, expected, attributes, std::move(segments));
}

std::vector<std::optional<StoredObject>> Client::commit_objects(
    std::span<const ObjectCommit> objects) {
  std::lock_guard lock(impl_->mutex);
  return impl_->commit_objects(objects);
}

void Client::remove_object(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  impl_->remove_object(key);
}

FileStat Client::stat_object(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  return impl_->stat_object(key);
}

std::array<std::uint8_t, 32> Client::local_key() const {
  return impl_->keys.local;
}

TransferCounters Client::counters() const {
  const auto load = [](const std::atomic<std::uint64_t>& a) {
    return a.load(std::memory_order_relaxed);
  };
  return {load(impl_->object_bytes_sent), load(impl_->object_shares_sent),
          load(impl_->object_shares_skipped), load(impl_->object_bytes_received),
          load(impl_->object_commits)};
}

void split_store(const fs::path& file) {
  Client client;
  client.store(file, file.filename().string());
}

void split_fetch(const std::string& file) {
  Client client;
  client.fetch(file, fs::current_path());
}

}  // namespace splitfs
