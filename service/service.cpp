#include "service/service.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "protocol/codec.hpp"
#include "store/shared_store.hpp"

namespace splitfs::service {

namespace {

using protocol::ErrorReply;
using protocol::Reply;
using protocol::Status;

ErrorReply error(Status status, std::string message, std::vector<Id> missing = {}) {
  return ErrorReply{status, std::move(message), std::move(missing)};
}

// `what` names the kind of object a not_found refers to ("file", "share").
ErrorReply store_failure(std::error_code ec, std::string_view what) {
  if (ec.category() == store::store_category()) {
    switch (static_cast<store::Errc>(ec.value())) {
      case store::Errc::not_found:
        return error(Status::not_found, std::string("no such ") + std::string(what));
      case store::Errc::conflict:
        return error(Status::conflict, "the version is not newer than the stored version");
      case store::Errc::missing_shares:
        return error(Status::missing_shares, "the commit references shares the server lacks");
      case store::Errc::corrupt:
        return error(Status::corrupt, "stored data is damaged");
      case store::Errc::too_large:
        return error(Status::too_large, "a share exceeds the size limit");
      case store::Errc::no_space:
        return error(Status::quota_exceeded,
                     "this server is out of storage space; what it stored before is intact; "
                     "remove files (its operator then compacts) or have its space raised, then "
                     "try again");
      case store::Errc::quota_exceeded:
        return error(Status::quota_exceeded, "quota exceeded on this server");
      case store::Errc::io:
      case store::Errc::busy:
        break;
    }
  }
  return error(Status::internal, "the server could not complete the request");
}

class Handler {
 public:
  Handler(store::Store& store, std::string_view user, std::uint64_t quota)
      : store_(store), user_(user), quota_(store.keeps_quotas() ? quota : 0) {}

  Reply operator()(const protocol::Hello& hello) const {
    if (hello.version != protocol::kVersion) {
      return error(Status::unsupported, "protocol version " + std::to_string(hello.version) +
                                            " is not supported; this server speaks version " +
                                            std::to_string(protocol::kVersion));
    }
    return protocol::Empty{};
  }

  Reply operator()(const protocol::HasShares& request) const {
    if (request.ids.size() > protocol::kMaxBatchItems)
      return too_many();
    return protocol::Presence{store_.has_shares(user_, request.ids)};
  }

  Reply operator()(const protocol::PutShares& request) const {
    if (request.shares.size() > protocol::kMaxBatchItems)
      return too_many();
    std::vector<store::ShareInput> inputs;
    inputs.reserve(request.shares.size());
    std::size_t total = 0;
    for (const auto& share : request.shares) {
      if (share.data.size() > protocol::kMaxShareBytes) {
        return error(Status::too_large, "a share exceeds the size limit");
      }
      total += share.data.size();
      inputs.push_back(store::ShareInput{share.id, share.data});
    }
    if (total > protocol::kMaxBatchBytes) {
      return error(Status::too_large, "the shares exceed the batch size limit");
    }
    if (auto ec = quota_ != 0 ? store_.put_shares_within(user_, inputs, quota_)
                              : store_.put_shares(user_, inputs))
      return ec == store::Errc::quota_exceeded ? over_quota() : store_failure(ec, "share");
    return protocol::Empty{};
  }

  // All blobs in request order, or one error: corrupt beats not_found, which lists every missing
  // id.
  Reply operator()(const protocol::GetShares& request) const {
    if (request.ids.size() > protocol::kMaxBatchItems)
      return too_many();
    protocol::Shares shares;
    shares.blobs.reserve(request.ids.size());
    std::vector<Id> missing;
    std::size_t total = 0;
    for (const auto& id : request.ids) {
      Bytes blob;
      std::error_code ec = store_.get_share(user_, id, blob);
      if (ec == store::Errc::not_found) {
        missing.push_back(id);
        continue;
      }
      if (ec)
        return store_failure(ec, "share");
      total += blob.size();
      if (total > protocol::kMaxBatchBytes) {
        return error(Status::too_large, "the shares exceed the batch size limit");
      }
      if (missing.empty())
        shares.blobs.push_back(std::move(blob));
    }
    if (!missing.empty()) {
      return error(Status::not_found, "some shares are not held", std::move(missing));
    }
    return shares;
  }

  Reply operator()(const protocol::Commit& request) const {
    if (request.refs.size() > protocol::kMaxRefs)
      return too_many();
    if (record_too_large(request))
      return error(Status::too_large, "the file record exceeds the size limit");
    const std::vector<store::ShareRef> refs = store_refs(request);
    std::vector<Id> missing;
    std::error_code ec =
        quota_ != 0 ? store_.commit_within(user_, request.file, request.version, refs,
                                           request.entry, request.manifest, quota_, missing)
                    : store_.commit(user_, request.file, request.version, refs, request.entry,
                                    request.manifest, missing);
    if (ec == store::Errc::missing_shares) {
      ErrorReply reply = store_failure(ec, "share");
      reply.missing = std::move(missing);
      return reply;
    }
    if (ec == store::Errc::quota_exceeded)
      return over_quota();
    if (ec)
      return store_failure(ec, "file");
    return protocol::Empty{};
  }

  Reply operator()(const protocol::CommitBatch& request) const {
    std::size_t refs = 0;
    for (const auto& commit : request.commits) {
      refs += commit.refs.size();
      if (record_too_large(commit))
        return error(Status::too_large, "a file record exceeds the size limit");
    }
    if (request.commits.size() > protocol::kMaxBatchCommits || refs > protocol::kMaxRefs)
      return too_many();
    std::vector<std::vector<store::ShareRef>> refs_of(request.commits.size());
    std::vector<store::CommitInput> commits(request.commits.size());
    for (std::size_t i = 0; i < commits.size(); ++i) {
      const protocol::Commit& c = request.commits[i];
      refs_of[i] = store_refs(c);
      commits[i] = {c.file, c.version, refs_of[i], c.entry, c.manifest};
    }
    std::vector<std::error_code> results(commits.size());
    store_.commit_batch(user_, commits, quota_, results);
    protocol::CommitOutcomes outcomes;
    outcomes.statuses.reserve(results.size());
    for (const std::error_code& ec : results)
      outcomes.statuses.push_back(ec ? store_failure(ec, "file").status : Status::ok);
    return outcomes;
  }

  Reply operator()(const protocol::GetFile& request) const {
    store::FileRecord record;
    if (auto ec = store_.get_file(user_, request.file, record))
      return store_failure(ec, "file");
    return protocol::FileRecord{record.version, std::move(record.entry),
                                std::move(record.manifest)};
  }

  Reply operator()(const protocol::ListFiles&) const {
    std::vector<store::FileSummary> summaries;
    // An empty listing must not stand for one that could not be read (the index is down).
    if (store_.list_files(user_, summaries)) {
      return error(Status::busy, "its storage is unavailable; try again later");
    }
    if (summaries.size() > protocol::kMaxListItems) {
      return error(Status::too_large, "too many files to list");
    }
    protocol::FileList list;
    list.files.reserve(summaries.size());
    for (auto& summary : summaries) {
      list.files.push_back(
          protocol::FileListItem{summary.file, summary.version, std::move(summary.entry)});
    }
    return list;
  }

  Reply operator()(const protocol::RemoveFile& request) const {
    if (auto ec = store_.remove_file(user_, request.file))
      return store_failure(ec, "file");
    return protocol::Empty{};
  }

  Reply operator()(const protocol::GetFileInfo& request) const {
    store::FileInfo info;
    if (auto ec = store_.file_info(user_, request.file, info))
      return store_failure(ec, "file");
    return protocol::FileInfo{info.version, info.shares, info.chunks, info.stored_bytes};
  }

  Reply operator()(const protocol::GetStats&) const {
    store::Usage u;
    if (auto ec = store_.usage(user_, u))
      return store_failure(ec, "user");
    return protocol::UsageStats{u.files,          u.logical_bytes,       u.referenced_bytes,
                                u.shares,         u.share_logical_bytes, u.share_bytes,
                                u.garbage_shares, u.garbage_bytes,       u.disk_bytes};
  }

 private:
  static bool record_too_large(const protocol::Commit& commit) {
    return commit.entry.size() > protocol::kMaxEntryBytes ||
           commit.manifest.size() > protocol::kMaxManifestBytes;
  }
  static std::vector<store::ShareRef> store_refs(const protocol::Commit& commit) {
    std::vector<store::ShareRef> refs;
    refs.reserve(commit.refs.size());
    for (const auto& ref : commit.refs)
      refs.push_back(store::ShareRef{ref.id, ref.chunks});
    return refs;
  }
  static ErrorReply too_many() { return error(Status::too_large, "too many items in one request"); }
  ErrorReply over_quota() const {
    return error(Status::quota_exceeded, "quota exceeded: storing this would take user '" +
                                             std::string(user_) + "' over its quota of " +
                                             store::human_bytes(quota_) + " on this server");
  }

  store::Store& store_;
  std::string_view user_;
  std::uint64_t quota_;  // for a store that keeps quotas itself; 0 for none
};

}  // namespace

protocol::Reply Service::handle(std::string_view user, const protocol::Request& request,
                                std::uint64_t quota) {
  try {
    return std::visit(Handler(store_, user, quota), request);
  } catch (const std::exception& e) {
    // The operator sees the cause; the client sees a generic failure.
    std::cerr << (std::string("request failed: ") + e.what() + "\n") << std::flush;
  } catch (...) {
    std::cerr << "request failed: unknown exception\n" << std::flush;
  }
  return error(Status::internal, "the server could not complete the request");
}

protocol::ErrorReply decode_failure(std::error_code error_code) {
  const Status status = protocol::status_for(error_code);
  switch (status) {
    case Status::unsupported:
      return error(status, "unknown request");
    case Status::too_large:
      return error(status, "the request exceeds a size limit");
    default:
      return error(status, "malformed request");
  }
}

namespace {

// Bounds of the storage options: a year.
constexpr std::int64_t kMaxSettingSeconds = 366LL * 24 * 3600;

void log_storage(std::string_view line) {
  std::string text(line);
  text.push_back('\n');
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

}  // namespace

store::Options StorageSettings::store_options(const std::filesystem::path& data) const {
  store::Options options;
  options.garbage_grace = std::chrono::seconds(garbage_grace_seconds);
  options.capacity_bytes = capacity_bytes;
  options.reserve_bytes = reserve_bytes;
  options.reserve_file = data / "RESERVE";
  return options;
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
  if (text == "none")
    return 0;
  std::size_t end = 0;
  double value = 0;
  try {
    value = std::stod(text, &end);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string unit = text.substr(end);
  for (const char* suffix : {"iB", "B"}) {
    if (unit.ends_with(suffix)) {
      unit.resize(unit.size() - std::strlen(suffix));
      break;
    }
  }
  static const std::string kUnits = "KMGTP";
  double scale = 1;
  if (unit.size() == 1 && kUnits.find(unit[0]) != std::string::npos) {
    for (std::size_t i = 0; i <= kUnits.find(unit[0]); ++i)
      scale *= 1024;
  } else if (!unit.empty()) {
    return std::nullopt;
  }
  const double bytes = value * scale;
  if (!(bytes >= 1) || bytes > 9.0e18)
    return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

StorageCommands::StorageCommands(CLI::App& app, StorageSettings& settings) : settings_(settings) {
  app.add_option("--compact-interval", settings.compact_interval_seconds,
                 "Seconds between background compactions of the store; 0 turns them off")
      ->check(CLI::Range(std::int64_t{0}, kMaxSettingSeconds))
      ->capture_default_str();
  app.add_option("--garbage-grace", settings.garbage_grace_seconds,
                 "Seconds an unreferenced share survives compaction; an upload must commit "
                 "within half of it")
      ->check(CLI::Range(std::int64_t{0}, kMaxSettingSeconds))
      ->capture_default_str();
  // A size, or 0 or none for none.
  const auto size_option = [](std::uint64_t& target) {
    return [&target](const std::string& text) {
      const std::optional<std::uint64_t> size =
          text == "0" ? std::optional<std::uint64_t>(0) : parse_size(text);
      if (!size)
        throw CLI::ValidationError("give a size such as 500M, 10G or 1T, or none");
      target = *size;
    };
  };
  app.add_option_function<std::string>(
         "--capacity", size_option(settings.capacity_bytes),
         "The most the store may take on disk (e.g. 100G); new data past it is refused as 'out "
         "of storage space' (default: none, only the disk's size)")
      ->type_name("SIZE");
  app.add_option_function<std::string>(
         "--reserve", size_option(settings.reserve_bytes),
         "Space kept in DATA/RESERVE and given back when the disk fills up, so that removals and "
         "compaction still find room (default 8M; none for no reserve)")
      ->type_name("SIZE");

  compact_ = app.add_subcommand(
      "compact",
      "Reclaim space now: drop unreferenced shares past their grace period and rewrite packs "
      "that are mostly dead (a running server does it itself and reports)");
  compact_
      ->add_option("--grace", grace_seconds_,
                   "Grace period of this run in seconds (default: --garbage-grace)")
      ->check(CLI::Range(std::int64_t{0}, kMaxSettingSeconds));
  compact_
      ->add_option("--wait", wait_seconds_, "On a running server: seconds to wait for its report")
      ->check(CLI::Range(std::int64_t{1}, kMaxSettingSeconds))
      ->capture_default_str();
  compact_->fallthrough();
  check_ = app.add_subcommand(
      "check",
      "Verify the store: index against packs, every record's checksum, every refcount; exit "
      "status 1 if anything is wrong");
  check_
      ->add_option("--wait", wait_seconds_,
                   "On a running server: seconds to wait for a compaction in progress")
      ->check(CLI::Range(std::int64_t{1}, kMaxSettingSeconds))
      ->capture_default_str();
  check_->fallthrough();
  stats_ = app.add_subcommand(
      "stats", "Objects, logical bytes, bytes on disk, dedup and compression ratios");
  stats_->fallthrough();
}

bool StorageCommands::chosen() const {
  return *compact_ || *check_ || *stats_;
}

int StorageCommands::run(const std::filesystem::path& data, const std::string& program,
                         const SharedBackend& shared) const {
  if (!shared.backend.empty())
    return run_shared(data, program, shared);
  namespace fs = std::filesystem;
  const fs::path dir = data / "store";
  auto fail = [&](const std::string& what) {
    log_storage(program + ": " + what);
    return 1;
  };
  std::error_code exists_error;
  if (!fs::exists(dir / "index.sqlite", exists_error))
    return fail("no store in " + dir.string());
  const bool live = store::in_use(dir);
  const std::chrono::seconds wait(wait_seconds_);
  try {
    std::unique_ptr<store::Store> opened;
    if (!live)
      opened = store::Store::open(dir, settings_.store_options(data));
    const std::string where =
        "store " + dir.string() + (live ? " (in use by a running server)" : "") + "\n";
    if (*stats_) {
      store::StoreStats stats;
      if (auto ec = live ? store::inspect_stats(dir, stats) : opened->stats(stats))
        return fail("cannot read the store: " + ec.message());
      std::cout << where << store::describe(stats) << std::flush;
      return 0;
    }
    if (*check_) {
      store::CheckReport report;
      const std::error_code ec =
          live ? store::inspect_check(dir, report, wait) : opened->check(report);
      if (ec == store::Errc::busy)
        return fail("a compaction is still running after " + std::to_string(wait_seconds_) +
                    " s; try again later");
      if (ec)
        return fail("cannot check the store: " + ec.message());
      std::cout << where << store::describe(report) << std::flush;
      return report.ok() ? 0 : 1;
    }
    std::optional<std::chrono::seconds> grace;
    if (grace_seconds_ >= 0)
      grace = std::chrono::seconds(grace_seconds_);
    store::CompactionReport report;
    std::error_code ec;
    if (live) {
      ec = store::request_compaction(dir, grace, wait, report);
      if (ec == store::Errc::busy)
        return fail("the running server did not report a compaction within " +
                    std::to_string(wait_seconds_) + " s; see its log");
    } else {
      ec = opened->compact({grace, "command", nullptr}, report);
    }
    if (ec)
      return fail("cannot compact the store: " + ec.message());
    std::cout << where << store::describe(report) << std::flush;
    return 0;
  } catch (const store::StoreError& e) {
    return fail(e.what());
  }
}

int StorageCommands::run_shared(const std::filesystem::path& data, const std::string& program,
                                const SharedBackend& shared) const {
  auto fail = [&](const std::string& what) {
    log_storage(program + ": " + what);
    return 1;
  };
  std::unique_ptr<store::Store> opened;
  try {
    opened = store::open_shared(shared.backend, shared.index, shared.credentials_file,
                                settings_.store_options(data));
  } catch (const store::StoreError& e) {
    return fail(e.what());
  }
  const std::string where = "shared store " + shared.backend + ", index " + shared.index + "\n";
  if (*stats_) {
    store::StoreStats stats;
    if (auto ec = opened->stats(stats))
      return fail("cannot read the store: " + ec.message() + " (see the messages above)");
    std::cout << where << store::describe(stats) << std::flush;
    return 0;
  }
  if (*check_) {
    store::CheckReport report;
    if (auto ec = opened->check(report))
      return fail("cannot check the store: " + ec.message() + " (see the messages above)");
    std::cout << where << store::describe(report) << std::flush;
    return report.ok() ? 0 : 1;
  }
  std::optional<std::chrono::seconds> grace;
  if (grace_seconds_ >= 0)
    grace = std::chrono::seconds(grace_seconds_);
  store::CompactionReport report;
  // One compaction at a time across every process: a server's may be running.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_seconds_);
  std::error_code ec;
  while ((ec = opened->compact({grace, "command", nullptr}, report)) == store::Errc::busy &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::seconds(1));
  if (ec == store::Errc::busy)
    return fail("another process was still compacting or checking the store after " +
                std::to_string(wait_seconds_) + " s; try again later");
  if (ec)
    return fail("cannot compact the store: " + ec.message() + " (see the messages above)");
  std::cout << where << store::describe(report) << std::flush;
  return 0;
}

std::unique_ptr<store::BackgroundCompactor> start_background_compaction(
    store::Store& store, const std::filesystem::path& store_dir, const StorageSettings& settings) {
  return std::make_unique<store::BackgroundCompactor>(
      store, store_dir, std::chrono::seconds(settings.compact_interval_seconds), log_storage);
}

}  // namespace splitfs::service
