#include "cache/disk_tier.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <splitfs/errors.hpp>
#include <system_error>
#include <utility>
#include <vector>

#include "common/fd.hpp"

namespace splitfs::cache {

namespace fsys = std::filesystem;

namespace {

constexpr std::string_view kNameLabel = "splitfs disk cache: names";
constexpr std::string_view kSealLabel = "splitfs disk cache: sealing";
constexpr std::size_t kNameHexDigits = 64;

core::Key derive(const core::Key& key, std::string_view label) {
  return core::keyed_hash(
      key, ByteView(reinterpret_cast<const std::uint8_t*>(label.data()), label.size()));
}

ByteView view_of(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

bool is_entry_name(const std::string& name) {
  return name.size() == kNameHexDigits && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool read_whole(const fsys::path& path, Bytes& out) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      static_cast<std::uint64_t>(st.st_size) > DiskTier::kMaxEntryBytes + 64)
    return false;
  out.resize(static_cast<std::size_t>(st.st_size));
  return read_fully(fd.get(), out.data(), out.size());
}

bool write_whole(const fsys::path& path, ByteView bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  return fd && write_fully(fd.get(), bytes.data(), bytes.size());
}

}  // namespace

DiskTier::DiskTier(fsys::path dir, std::uint64_t capacity_bytes, const core::Key& key)
    : dir_(std::move(dir)),
      capacity_(capacity_bytes),
      name_key_(derive(key, kNameLabel)),
      seal_key_(derive(key, kSealLabel)) {
  std::error_code ec;
  fsys::create_directories(dir_, ec);
  if (!ec)
    fsys::permissions(dir_, fsys::perms::owner_all, fsys::perm_options::replace, ec);
  if (ec || !fsys::is_directory(dir_))
    throw LocalIoError("cannot use " + dir_.string() + " as a cache folder: " + ec.message());
  counters_.capacity = capacity_;
  adopt_existing();
}

std::string DiskTier::file_name(const std::string& key) const {
  return to_hex(core::keyed_hash(name_key_, view_of(key)));
}

void DiskTier::adopt_existing() {
  struct Found {
    std::string name;
    std::uint64_t size;
    fsys::file_time_type time;
  };
  std::vector<Found> found;
  std::error_code ec;
  for (const auto& item : fsys::directory_iterator(dir_, ec)) {
    const std::string name = item.path().filename().string();
    std::error_code item_ec;
    if (!is_entry_name(name) || !item.is_regular_file(item_ec)) {
      // Temporary files of writes a crash interrupted, and anything that is not ours.
      if (name.find(".tmp.") != std::string::npos)
        fsys::remove(item.path(), item_ec);
      continue;
    }
    const auto size = item.file_size(item_ec);
    const auto time = item.last_write_time(item_ec);
    if (!item_ec)
      found.push_back({name, size, time});
  }
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.time < b.time; });
  std::list<std::string> victims;
  {
    std::lock_guard lock(mutex_);
    for (auto& f : found) {
      lru_.push_back(f.name);
      entries_[f.name] = Entry{f.size, std::prev(lru_.end())};
      usage_ += f.size;
    }
    victims = evict_locked();
  }
  remove_files(victims);
}

std::optional<Bytes> DiskTier::get(const std::string& key) {
  const std::string name = file_name(key);
  {
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(name);
    if (it == entries_.end()) {
      ++counters_.misses;
      return std::nullopt;
    }
    lru_.splice(lru_.end(), lru_, it->second.position);
  }
  Bytes sealed;
  Bytes plain;
  const bool read = read_whole(dir_ / name, sealed);
  if (read && core::open_record(seal_key_, view_of(key), sealed, plain) &&
      plain.size() <= kMaxEntryBytes) {
    std::lock_guard lock(mutex_);
    ++counters_.hits;
    return plain;
  }
  std::error_code ec;
  fsys::remove(dir_ / name, ec);
  std::lock_guard lock(mutex_);
  ++counters_.misses;
  ++(read ? counters_.rejected : counters_.errors);
  forget_locked(name);
  return std::nullopt;
}

bool DiskTier::put(const std::string& key, ByteView bytes) {
  if (bytes.size() > kMaxEntryBytes || bytes.size() + 64 > capacity_)
    return false;
  const std::string name = file_name(key);
  const Bytes sealed = core::seal_record(seal_key_, view_of(key), bytes);
  std::uint64_t counter = 0;
  {
    std::lock_guard lock(mutex_);
    counter = ++temp_counter_;
  }
  const fsys::path temp =
      dir_ / (name + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter));
  std::error_code ec;
  if (write_whole(temp, sealed))
    fsys::rename(temp, dir_ / name, ec);
  else
    ec = std::make_error_code(std::errc::io_error);
  if (ec) {
    fsys::remove(temp, ec);
    std::lock_guard lock(mutex_);
    ++counters_.errors;
    return false;
  }
  std::list<std::string> victims;
  {
    std::lock_guard lock(mutex_);
    forget_locked(name);
    lru_.push_back(name);
    entries_[name] = Entry{sealed.size(), std::prev(lru_.end())};
    usage_ += sealed.size();
    ++counters_.writes;
    victims = evict_locked();
  }
  remove_files(victims);
  return true;
}

void DiskTier::forget_locked(const std::string& name) {
  const auto it = entries_.find(name);
  if (it == entries_.end())
    return;
  usage_ -= it->second.size;
  lru_.erase(it->second.position);
  entries_.erase(it);
}

std::list<std::string> DiskTier::evict_locked() {
  std::list<std::string> victims;
  while (usage_ > capacity_ && !lru_.empty()) {
    const std::string name = lru_.front();
    forget_locked(name);
    victims.push_back(name);
    ++counters_.evictions;
  }
  return victims;
}

void DiskTier::remove_files(const std::list<std::string>& names) {
  // A reader that looked an evicted entry up a moment ago finds the file gone: a miss.
  for (const auto& name : names) {
    std::error_code ec;
    fsys::remove(dir_ / name, ec);
  }
}

DiskTierStats DiskTier::stats() const {
  std::lock_guard lock(mutex_);
  DiskTierStats out = counters_;
  out.entries = entries_.size();
  out.usage = usage_;
  return out;
}

}  // namespace splitfs::cache
