#include "service/service.hpp"

#include <exception>
#include <iostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "protocol/codec.hpp"

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
      case store::Errc::io:
        break;
    }
  }
  return error(Status::internal, "the server could not complete the request");
}

class Handler {
 public:
  Handler(store::Store& store, std::string_view user) : store_(store), user_(user) {}

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
    if (auto ec = store_.put_shares(user_, inputs))
      return store_failure(ec, "share");
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
    if (request.entry.size() > protocol::kMaxEntryBytes ||
        request.manifest.size() > protocol::kMaxManifestBytes) {
      return error(Status::too_large, "the file record exceeds the size limit");
    }
    std::vector<store::ShareRef> refs;
    refs.reserve(request.refs.size());
    for (const auto& ref : request.refs)
      refs.push_back(store::ShareRef{ref.id, ref.chunks});
    std::vector<Id> missing;
    std::error_code ec = store_.commit(user_, request.file, request.version, refs, request.entry,
                                       request.manifest, missing);
    if (ec == store::Errc::missing_shares) {
      ErrorReply reply = store_failure(ec, "share");
      reply.missing = std::move(missing);
      return reply;
    }
    if (ec)
      return store_failure(ec, "file");
    return protocol::Empty{};
  }

  Reply operator()(const protocol::GetFile& request) const {
    store::FileRecord record;
    if (auto ec = store_.get_file(user_, request.file, record))
      return store_failure(ec, "file");
    return protocol::FileRecord{record.version, std::move(record.entry),
                                std::move(record.manifest)};
  }

  Reply operator()(const protocol::ListFiles&) const {
    std::vector<store::FileSummary> summaries = store_.list_files(user_);
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

 private:
  static ErrorReply too_many() { return error(Status::too_large, "too many items in one request"); }

  store::Store& store_;
  std::string_view user_;
};

}  // namespace

protocol::Reply Service::handle(std::string_view user, const protocol::Request& request) {
  try {
    return std::visit(Handler(store_, user), request);
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

}  // namespace splitfs::service
