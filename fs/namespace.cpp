#include "fs/namespace.hpp"

#include <linux/fs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace splitfs::fs {

Namespace::Namespace(Tree tree) : tree_(std::move(tree)) {
  rebuild_runtime();
}

void Namespace::rebuild_runtime() {
  std::unordered_map<std::uint64_t, Runtime> rt;
  const auto counts = link_counts(tree_);
  for (const auto& [ino, rec] : tree_.inodes) {
    Runtime& r = rt[ino];
    const auto old = rt_.find(ino);
    if (old != rt_.end()) {
      r.lookups = old->second.lookups;
      r.opens = old->second.opens;
    }
    const auto c = counts.find(ino);
    r.nlink = c == counts.end() ? 0 : c->second;
  }
  rt[kRootIno].parent = kRootIno;
  for (const auto& [ino, rec] : tree_.inodes) {
    for (const auto& [name, child] : rec.entries) {
      if (is_dir(child))
        rt[child].parent = ino;
    }
  }
  rt_ = std::move(rt);
}

const InodeRecord* Namespace::find(std::uint64_t ino) const {
  const auto it = tree_.inodes.find(ino);
  return it == tree_.inodes.end() ? nullptr : &it->second;
}

InodeRecord* Namespace::find_mut(std::uint64_t ino) {
  const auto it = tree_.inodes.find(ino);
  return it == tree_.inodes.end() ? nullptr : &it->second;
}

std::uint32_t Namespace::nlink(std::uint64_t ino) const {
  const auto it = rt_.find(ino);
  return it == rt_.end() ? 0 : it->second.nlink;
}

std::uint64_t Namespace::parent(std::uint64_t dir) const {
  const auto it = rt_.find(dir);
  return it == rt_.end() || it->second.parent == 0 ? kRootIno : it->second.parent;
}

std::uint64_t Namespace::made_at(std::uint64_t ino) const {
  const auto it = rt_.find(ino);
  return it == rt_.end() ? 0 : it->second.made;
}

bool Namespace::is_dir(std::uint64_t ino) const {
  const InodeRecord* r = find(ino);
  return r && S_ISDIR(r->mode);
}

bool Namespace::is_within(std::uint64_t ino, std::uint64_t dir) const {
  for (std::uint64_t at = ino;; at = parent(at)) {
    if (at == dir)
      return true;
    if (at == kRootIno || nlink(at) == 0)
      return false;
  }
}

int Namespace::check_name(const std::string& name) const {
  if (name.size() > kMaxNameBytes)
    return ENAMETOOLONG;
  if (name == "." || name == "..")
    return EEXIST;
  return valid_name(name) ? 0 : EINVAL;
}

// The directory `parent` for a change in it: ENOENT if gone or removed, ENOTDIR if not one.
int Namespace::dir_of(std::uint64_t parent, InodeRecord*& dir) {
  dir = find_mut(parent);
  if (!dir || nlink(parent) == 0)
    return ENOENT;
  return S_ISDIR(dir->mode) ? 0 : ENOTDIR;
}

void Namespace::touch_dir(InodeRecord& dir, std::int64_t now) {
  dir.mtime_ns = dir.ctime_ns = now;
}

int Namespace::lookup(std::uint64_t parent, const std::string& name, std::uint64_t& ino) const {
  const InodeRecord* dir = find(parent);
  if (!dir)
    return ENOENT;
  if (!S_ISDIR(dir->mode))
    return ENOTDIR;
  if (name.size() > kMaxNameBytes)
    return ENAMETOOLONG;
  if (name == ".") {
    ino = parent;
    return 0;
  }
  if (name == "..") {
    ino = this->parent(parent);
    return 0;
  }
  const auto it = dir->entries.find(name);
  if (it == dir->entries.end())
    return ENOENT;
  ino = it->second;
  return 0;
}

int Namespace::create(std::uint64_t parent, const std::string& name, std::uint32_t mode,
                      std::uint64_t rdev, const std::string& target, const Caller& caller,
                      std::int64_t now, std::uint64_t& ino) {
  InodeRecord* dir = nullptr;
  if (int e = dir_of(parent, dir))
    return e;
  if (int e = check_name(name))
    return e;
  if (dir->entries.contains(name))
    return EEXIST;
  const bool new_dir = S_ISDIR(mode);
  if (new_dir && nlink(parent) >= kMaxLinks)
    return EMLINK;
  if (S_ISLNK(mode) && (target.empty() || target.size() > kMaxSymlinkBytes))
    return target.empty() ? ENOENT : ENAMETOOLONG;
  if (block_next_ >= block_end_)
    return kNeedInodes;
  ino = block_next_++;
  InodeRecord rec;
  rec.mode = mode;
  rec.uid = caller.uid;
  rec.gid = caller.gid;
  if (dir->mode & S_ISGID) {
    rec.gid = dir->gid;
    if (new_dir)
      rec.mode |= S_ISGID;
  }
  rec.rdev = rdev;
  if (S_ISLNK(mode)) {
    rec.target = target;
    rec.size = target.size();
  }
  rec.atime_ns = rec.mtime_ns = rec.ctime_ns = now;
  tree_.inodes.emplace(ino, std::move(rec));
  dir = find_mut(parent);  // the map may have rebalanced, but node pointers stay valid
  dir->entries.emplace(name, ino);
  touch_dir(*dir, now);
  Runtime& r = rt_[ino];
  if (new_dir) {
    r.nlink = 2;
    r.parent = parent;
    rt_[parent].nlink += 1;
  } else {
    r.nlink = 1;
  }
  changed();
  r.made = generation_;
  return 0;
}

int Namespace::link(std::uint64_t ino, std::uint64_t parent, const std::string& name,
                    std::int64_t now) {
  InodeRecord* rec = find_mut(ino);
  if (!rec || nlink(ino) == 0)
    return ENOENT;
  if (S_ISDIR(rec->mode))
    return EPERM;
  InodeRecord* dir = nullptr;
  if (int e = dir_of(parent, dir))
    return e;
  if (int e = check_name(name))
    return e;
  if (dir->entries.contains(name))
    return EEXIST;
  if (nlink(ino) >= kMaxLinks)
    return EMLINK;
  dir->entries.emplace(name, ino);
  touch_dir(*dir, now);
  rec->ctime_ns = now;
  rt_[ino].nlink += 1;
  changed();
  return 0;
}

// Takes one name away from ino (a directory loses all of its links at once).
void Namespace::drop_link(std::uint64_t ino, std::int64_t now) {
  Runtime& r = rt_[ino];
  InodeRecord* rec = find_mut(ino);
  rec->ctime_ns = now;
  if (S_ISDIR(rec->mode)) {
    rt_[r.parent].nlink -= 1;
    r.nlink = 0;
    r.parent = 0;
  } else {
    r.nlink -= 1;
  }
  maybe_gone(ino);
}

int Namespace::unlink(std::uint64_t parent, const std::string& name, std::int64_t now,
                      std::uint64_t& ino) {
  InodeRecord* dir = nullptr;
  if (int e = dir_of(parent, dir))
    return e;
  if (name.size() > kMaxNameBytes)
    return ENAMETOOLONG;
  const auto it = dir->entries.find(name);
  if (it == dir->entries.end())
    return ENOENT;
  ino = it->second;
  if (is_dir(ino))
    return EISDIR;
  dir->entries.erase(it);
  touch_dir(*dir, now);
  drop_link(ino, now);
  changed();
  return 0;
}

int Namespace::rmdir(std::uint64_t parent, const std::string& name, std::int64_t now,
                     std::uint64_t& ino) {
  InodeRecord* dir = nullptr;
  if (int e = dir_of(parent, dir))
    return e;
  if (name.size() > kMaxNameBytes)
    return ENAMETOOLONG;
  if (name == ".")
    return EINVAL;
  if (name == "..")
    return ENOTEMPTY;
  const auto it = dir->entries.find(name);
  if (it == dir->entries.end())
    return ENOENT;
  ino = it->second;
  const InodeRecord* victim = find(ino);
  if (!S_ISDIR(victim->mode))
    return ENOTDIR;
  if (!victim->entries.empty())
    return ENOTEMPTY;
  dir->entries.erase(it);
  touch_dir(*dir, now);
  drop_link(ino, now);
  changed();
  return 0;
}

int Namespace::rename(std::uint64_t parent, const std::string& name, std::uint64_t new_parent,
                      const std::string& new_name, unsigned flags, std::int64_t now,
                      std::uint64_t& replaced) {
  replaced = 0;
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)) {
    return EINVAL;
  }
  InodeRecord* from = nullptr;
  InodeRecord* to = nullptr;
  if (int e = dir_of(parent, from))
    return e;
  if (int e = dir_of(new_parent, to))
    return e;
  if (name.size() > kMaxNameBytes)
    return ENAMETOOLONG;
  if (int e = check_name(new_name))
    return e == EEXIST ? EBUSY : e;
  const auto src_it = from->entries.find(name);
  if (src_it == from->entries.end())
    return ENOENT;
  const std::uint64_t src = src_it->second;
  const auto dst_it = to->entries.find(new_name);
  const bool exists = dst_it != to->entries.end();
  const std::uint64_t dst = exists ? dst_it->second : 0;
  const bool src_dir = is_dir(src);
  const bool dst_dir = exists && is_dir(dst);

  if (flags & RENAME_EXCHANGE) {
    if (!exists)
      return ENOENT;
    if (src == dst)
      return 0;
    if ((src_dir && is_within(new_parent, src)) || (dst_dir && is_within(parent, dst)))
      return EINVAL;
    src_it->second = dst;
    dst_it->second = src;
    if (parent != new_parent) {
      if (src_dir) {
        rt_[src].parent = new_parent;
        rt_[parent].nlink -= 1;
        rt_[new_parent].nlink += 1;
      }
      if (dst_dir) {
        rt_[dst].parent = parent;
        rt_[new_parent].nlink -= 1;
        rt_[parent].nlink += 1;
      }
    }
    find_mut(src)->ctime_ns = now;
    find_mut(dst)->ctime_ns = now;
    touch_dir(*from, now);
    touch_dir(*to, now);
    changed();
    return 0;
  }
  if (exists && (flags & RENAME_NOREPLACE))
    return EEXIST;
  if (exists && src == dst)
    return 0;  // two names of one file: POSIX says do nothing
  if (src_dir && is_within(new_parent, src))
    return EINVAL;
  if (exists) {
    if (src_dir && !dst_dir)
      return ENOTDIR;
    if (!src_dir && dst_dir)
      return EISDIR;
    if (dst_dir && !find(dst)->entries.empty())
      return ENOTEMPTY;
  }
  if (src_dir && !exists && parent != new_parent && nlink(new_parent) >= kMaxLinks)
    return EMLINK;
  from->entries.erase(src_it);
  if (exists) {
    to->entries.erase(new_name);
    drop_link(dst, now);
    replaced = dst;
  }
  to->entries.emplace(new_name, src);
  if (src_dir && parent != new_parent) {
    rt_[src].parent = new_parent;
    rt_[parent].nlink -= 1;
    rt_[new_parent].nlink += 1;
  }
  find_mut(src)->ctime_ns = now;
  touch_dir(*from, now);
  touch_dir(*to, now);
  changed();
  return 0;
}

void Namespace::add_lookup(std::uint64_t ino, std::uint64_t n) {
  rt_[ino].lookups += n;
}

void Namespace::forget(std::uint64_t ino, std::uint64_t n) {
  const auto it = rt_.find(ino);
  if (it == rt_.end())
    return;
  it->second.lookups -= std::min(it->second.lookups, n);
  maybe_gone(ino);
}

void Namespace::add_open(std::uint64_t ino) {
  rt_[ino].opens += 1;
}

void Namespace::release_open(std::uint64_t ino) {
  const auto it = rt_.find(ino);
  if (it == rt_.end())
    return;
  if (it->second.opens > 0)
    it->second.opens -= 1;
  maybe_gone(ino);
}

bool Namespace::referenced(std::uint64_t ino) const {
  const auto it = rt_.find(ino);
  return it != rt_.end() && (it->second.lookups > 0 || it->second.opens > 0);
}

void Namespace::maybe_gone(std::uint64_t ino) {
  const auto it = rt_.find(ino);
  if (ino == kRootIno || it == rt_.end() || it->second.nlink > 0 || it->second.lookups > 0 ||
      it->second.opens > 0) {
    return;
  }
  rt_.erase(it);
  tree_.inodes.erase(ino);
  gone_.push_back(ino);
}

void Namespace::drop_references() {
  std::vector<std::uint64_t> all;
  for (auto& [ino, r] : rt_) {
    r.lookups = 0;
    r.opens = 0;
    all.push_back(ino);
  }
  for (const auto ino : all)
    maybe_gone(ino);
}

std::vector<std::uint64_t> Namespace::take_gone() {
  return std::exchange(gone_, {});
}

void Namespace::reserve_block(std::uint64_t count) {
  block_next_ = tree_.next_ino;
  tree_.next_ino += count;
  block_end_ = tree_.next_ino;
  changed();
}

std::size_t Namespace::named_count() const {
  std::size_t n = 0;
  for (const auto& [ino, r] : rt_)
    n += r.nlink > 0 ? 1 : 0;
  return n;
}

Tree Namespace::snapshot() const {
  Tree out;
  out.next_ino = tree_.next_ino;
  for (const auto& [ino, rec] : tree_.inodes) {
    if (nlink(ino) > 0)
      out.inodes.emplace(ino, rec);
  }
  return out;
}

std::string Namespace::path_of(std::uint64_t ino) const {
  std::string path;
  for (std::size_t depth = 0; ino != kRootIno && depth < 4096; ++depth) {
    std::uint64_t parent = 0;
    const std::string* name = nullptr;
    const auto find_in = [&](std::uint64_t dir, const InodeRecord& rec) {
      for (const auto& [n, child] : rec.entries) {
        if (child == ino) {
          parent = dir;
          name = &n;
          return true;
        }
      }
      return false;
    };
    const auto rt = rt_.find(ino);
    if (rt != rt_.end() && rt->second.parent != 0 && is_dir(ino)) {
      const auto up = tree_.inodes.find(rt->second.parent);
      if (up != tree_.inodes.end())
        find_in(up->first, up->second);
    } else {
      for (const auto& [dir, rec] : tree_.inodes) {
        if (!rec.entries.empty() && nlink(dir) > 0 && find_in(dir, rec))
          break;
      }
    }
    if (!name)
      break;
    path.insert(0, *name);
    path.insert(0, 1, '/');
    ino = parent;
  }
  return path.empty() ? "/" : path;
}

Bytes Namespace::encode_snapshot(
    const std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>& committed) const {
  // The inodes no name reaches, from one walk of the runtime table rather than a lookup per inode:
  // every inode of tree_ has its Runtime (rebuild_runtime() and create() add it, maybe_gone()
  // removes both), so these are exactly the inodes with nlink() == 0.
  std::vector<std::uint64_t> unnamed;
  for (const auto& [ino, r] : rt_) {
    if (r.nlink == 0)
      unnamed.push_back(ino);
  }
  std::sort(unnamed.begin(), unnamed.end());
  return encode_tree_view(tree_, unnamed, committed);
}

void Namespace::adopt(Tree merged) {
  for (auto& [ino, rec] : tree_.inodes) {
    if (merged.inodes.contains(ino))
      continue;
    const auto it = rt_.find(ino);
    if (it != rt_.end() && (it->second.lookups > 0 || it->second.opens > 0)) {
      rec.entries.clear();
      merged.inodes.emplace(ino, std::move(rec));  // an orphan: no name reaches it
    } else {
      gone_.push_back(ino);
    }
  }
  tree_ = std::move(merged);
  rebuild_runtime();
  if (block_end_ > tree_.next_ino)
    tree_.next_ino = block_end_;
  changed();
}

}  // namespace splitfs::fs
