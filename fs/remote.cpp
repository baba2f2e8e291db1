#include "fs/remote.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>

namespace splitfs::fs {

namespace fsys = std::filesystem;

std::optional<RemoteTree> load_tree(Client& client, std::uint64_t min_version) {
  StoredObject object;
  try {
    object = client.open_object(kTreeKey, min_version);
  } catch (const NotFound&) {
    return std::nullopt;
  }
  const auto segments = client.read_segments(object.segments);
  Bytes bytes;
  bytes.reserve(object.size);
  for (const auto& s : segments)
    bytes.insert(bytes.end(), s.begin(), s.end());
  RemoteTree out;
  out.version = object.version;
  if (auto ec = decode_tree(bytes, out.tree))
    throw IntegrityError("the mount's tree (version " + std::to_string(object.version) +
                         ") does not decode: " + ec.message());
  return out;
}

StoredObject save_tree(Client& client, const Tree& tree, std::uint64_t expected) {
  const Bytes bytes = encode_tree(tree);
  const std::size_t segment = std::min<std::size_t>(kTreeSegmentBytes, client.segment_bytes());
  std::vector<ByteView> parts;
  for (std::size_t at = 0; at < bytes.size(); at += segment)
    parts.emplace_back(bytes.data() + at, std::min(segment, bytes.size() - at));
  auto refs = client.stage_segments(parts);
  ObjectAttributes attributes;
  attributes.size = bytes.size();
  attributes.segment_bytes = static_cast<std::uint32_t>(segment);
  attributes.mode = 0600;
  return client.commit_object(kTreeKey, expected, attributes, std::move(refs));
}

std::optional<std::uint64_t> resolve_path(const Tree& tree, std::string_view path) {
  std::uint64_t at = kRootIno;
  while (!path.empty()) {
    const auto slash = path.find('/');
    const std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (part.empty() || part == ".")
      continue;
    const auto dir = tree.inodes.find(at);
    if (dir == tree.inodes.end() || !S_ISDIR(dir->second.mode))
      return std::nullopt;
    const auto it = dir->second.entries.find(std::string(part));
    if (it == dir->second.entries.end())
      return std::nullopt;
    at = it->second;
  }
  return at;
}

std::vector<PathEntry> list_paths(const Tree& tree) {
  std::vector<PathEntry> out;
  std::function<void(std::uint64_t, const std::string&)> walk = [&](std::uint64_t dir,
                                                                    const std::string& prefix) {
    const auto it = tree.inodes.find(dir);
    if (it == tree.inodes.end())
      return;
    for (const auto& [name, child] : it->second.entries) {
      const auto c = tree.inodes.find(child);
      if (c == tree.inodes.end())
        continue;
      std::string path = prefix;
      path.append("/").append(name);
      if (S_ISDIR(c->second.mode))
        walk(child, path);
      else if (S_ISREG(c->second.mode) || S_ISLNK(c->second.mode))
        out.push_back({path, child, &c->second});
    }
  };
  walk(kRootIno, "");
  return out;
}

fsys::path fetch_file(Client& client, const Tree& tree, std::uint64_t ino, const std::string& name,
                      const fsys::path& dest) {
  const auto it = tree.inodes.find(ino);
  if (it == tree.inodes.end() || !S_ISREG(it->second.mode))
    throw Error("'" + name + "' is not a regular file in the mount");
  const InodeRecord& rec = it->second;
  fsys::path target = dest;
  if (fsys::is_directory(dest))
    target = dest / fsys::path(name).filename();
  const fsys::path dir = target.has_parent_path() ? target.parent_path() : fsys::path(".");
  std::string hidden(".");
  hidden += target.filename().string();
  hidden += ".splitfs-XXXXXX";
  std::string tmp = (dir / hidden).string();
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0)
    throw LocalIoError("cannot create a file in " + dir.string() + ": " + std::strerror(errno));
  // Removes the temporary file unless it was renamed into place.
  class Pending {
   public:
    Pending(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
    ~Pending() {
      if (fd_ >= 0)
        ::close(fd_);
      if (!path_.empty())
        ::unlink(path_.c_str());
    }
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    void kept() { path_.clear(); }

   private:
    int fd_;
    std::string path_;
  } pending(fd, tmp);
  const auto fail = [&] {
    throw LocalIoError("cannot write " + target.string() + ": " + std::strerror(errno));
  };
  if (rec.content_version > 0) {
    const StoredObject object = client.open_object(content_key(ino), rec.content_version);
    // In batches, so memory stays flat for large files.
    constexpr std::size_t kBatch = 32;
    for (std::size_t first = 0; first < object.segments.size(); first += kBatch) {
      const std::size_t count = std::min(kBatch, object.segments.size() - first);
      const auto data =
          client.read_segments(std::span<const SegmentRef>(object.segments).subspan(first, count));
      for (const auto& segment : data) {
        for (std::size_t done_bytes = 0; done_bytes < segment.size();) {
          const ssize_t n = ::write(fd, segment.data() + done_bytes, segment.size() - done_bytes);
          if (n < 0 && errno == EINTR)
            continue;
          if (n <= 0)
            fail();
          done_bytes += static_cast<std::size_t>(n);
        }
      }
    }
  }
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, static_cast<mode_t>(rec.mode & 0777 & ~mask)) != 0 || ::fsync(fd) != 0 ||
      ::rename(tmp.c_str(), target.c_str()) != 0) {
    fail();
  }
  pending.kept();
  return target;
}

}  // namespace splitfs::fs
