#include "fs/tree.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cassert>
#include <cstring>
#include <deque>
#include <limits>
#include <numeric>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/wire.hpp"

namespace splitfs::fs {

namespace {

// Inodes in ascending number, each with the names that lead to it as (parent, name) pairs, so
// that a directory's record does not grow with its entries: a new inode (the highest number yet)
// is appended at the end and its parent only changes fixed-size fields. Committing the tree then
// sends the segments that changed, not everything after the directory (segments are content
// addressed).
constexpr std::uint8_t kTreeFormat = 2;
// The smallest encoded inode, for bounding counts before allocating.
constexpr std::size_t kMinInodeBytes = 8 + 3 * 4 + 6 * 8 + 3 * 4;

class TreeCategory : public std::error_category {
 public:
  const char* name() const noexcept override { return "splitfs.tree"; }
  std::string message(int ev) const override {
    switch (static_cast<TreeErrc>(ev)) {
      case TreeErrc::malformed:
        return "the tree is malformed";
      case TreeErrc::unsupported_format:
        return "the tree format is not supported";
      case TreeErrc::inconsistent:
        return "the tree is inconsistent";
    }
    return "unknown tree error";
  }
};

bool is_dir(const InodeRecord& r) {
  return S_ISDIR(r.mode);
}

std::size_t xattr_bytes(const InodeRecord& r) {
  std::size_t total = 0;
  for (const auto& [name, value] : r.xattrs)
    total += name.size() + value.size();
  return total;
}

// An inode's fields before its target: number, mode, uid, gid and six u64 fields.
constexpr std::size_t kInodeFieldBytes = 8 + 3 * 4 + 6 * 8;

using InodeNode = std::pair<const std::uint64_t, InodeRecord>;

// One name of `child`: its entry in directory `parent`.
struct Link {
  std::uint64_t child;
  std::uint64_t parent;
  const std::string* name;
};

// One big-endian field as a single store (GCC leaves a byte loop of 8 as a loop at -O2).
template <std::size_t N>
std::uint8_t* put_be(std::uint8_t* p, std::uint64_t v) {
  static_assert(N == 1 || N == 4 || N == 8);
  if constexpr (N == 1) {
    *p = static_cast<std::uint8_t>(v);
  } else {
    using Field = std::conditional_t<N == 4, std::uint32_t, std::uint64_t>;
    auto f = static_cast<Field>(v);
    if constexpr (std::endian::native == std::endian::little) {
      if constexpr (N == 4)
        f = __builtin_bswap32(f);
      else
        f = __builtin_bswap64(f);
    }
    std::memcpy(p, &f, N);
  }
  return p + N;
}

// Appends to a vector reserved beforehand through a buffer on the stack: fields are plain stores,
// and the vector grows by whole chunks, never zero-filled first as resize() would.
class Stage {
 public:
  explicit Stage(Bytes& out) : out_(out) {}
  Stage(const Stage&) = delete;
  Stage& operator=(const Stage&) = delete;

  // Room for n <= kChunk bytes at the returned pointer; done() takes where the writing ended.
  std::uint8_t* room(std::size_t n) {
    if (kChunk - used_ < n)
      flush();
    return buf_.data() + used_;
  }
  void done(std::uint8_t* end) { used_ = static_cast<std::size_t>(end - buf_.data()); }
  void u32(std::uint32_t v) { done(put_be<4>(room(4), v)); }
  void u64(std::uint64_t v) { done(put_be<8>(room(8), v)); }
  // u32 length, then the bytes, as wire::Writer::text().
  void text(std::string_view s) {
    assert(s.size() <= std::numeric_limits<std::uint32_t>::max());
    u32(static_cast<std::uint32_t>(s.size()));
    const auto* data = reinterpret_cast<const std::uint8_t*>(s.data());
    if (s.size() > kChunk - used_) {
      flush();
      if (s.size() > kChunk) {
        out_.insert(out_.end(), data, data + s.size());
        return;
      }
    }
    std::memcpy(buf_.data() + used_, data, s.size());
    used_ += s.size();
  }
  void flush() {
    out_.insert(out_.end(), buf_.data(), buf_.data() + used_);
    used_ = 0;
  }

 private:
  static constexpr std::size_t kChunk = 8192;
  Bytes& out_;
  std::array<std::uint8_t, kChunk> buf_;  // not initialised: every byte is written before use
  std::size_t used_ = 0;
};

// Orders links by child, keeping the (parent, name) order of each child's names; may drop the
// names of inodes not in `kept` (ascending). A counting sort over the kept inodes when their
// numbers are dense enough for a table, as they are (numbers are handed out in sequence).
void order_by_child(const std::vector<const InodeNode*>& kept, std::vector<Link>& links) {
  const std::size_t table_limit = 4 * kept.size() + 4096;
  if (kept.empty() || kept.back()->first - kept.front()->first >= table_limit) {
    std::stable_sort(links.begin(), links.end(),
                     [](const Link& a, const Link& b) { return a.child < b.child; });
    return;
  }
  constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
  const std::uint64_t base = kept.front()->first;
  std::vector<std::uint32_t> slot(kept.back()->first - base + 1, kNone);
  for (std::size_t i = 0; i < kept.size(); ++i)
    slot[kept[i]->first - base] = static_cast<std::uint32_t>(i);
  const auto index_of = [&](std::uint64_t child) {
    return child < base || child - base >= slot.size() ? kNone : slot[child - base];
  };
  // start[i]: where the names of kept[i] go.
  std::vector<std::uint32_t> start(kept.size() + 1, 0);
  for (const Link& l : links) {
    if (const std::uint32_t i = index_of(l.child); i != kNone)
      ++start[i + 1];
  }
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<Link> sorted(start.back());
  for (const Link& l : links) {
    if (const std::uint32_t i = index_of(l.child); i != kNone)
      sorted[start[i]++] = l;
  }
  links = std::move(sorted);
}

// Marks everything reachable from `from` in `seen`.
void mark_reachable(const Tree& tree, std::uint64_t from, std::set<std::uint64_t>& seen) {
  std::deque<std::uint64_t> queue{from};
  seen.insert(from);
  while (!queue.empty()) {
    const auto it = tree.inodes.find(queue.front());
    queue.pop_front();
    if (it == tree.inodes.end())
      continue;
    for (const auto& [name, child] : it->second.entries) {
      if (seen.insert(child).second)
        queue.push_back(child);
    }
  }
}

}  // namespace

const std::error_category& tree_category() {
  static const TreeCategory category;
  return category;
}

std::error_code make_error_code(TreeErrc e) {
  return {static_cast<int>(e), tree_category()};
}

std::string content_key(std::uint64_t ino) {
  return "ino/" + std::to_string(ino);
}

Tree make_empty_tree(std::uint32_t root_mode, std::uint32_t uid, std::uint32_t gid,
                     std::int64_t now_ns) {
  Tree tree;
  InodeRecord& root = tree.inodes[kRootIno];
  root.mode = S_IFDIR | (root_mode & 07777);
  root.uid = uid;
  root.gid = gid;
  root.atime_ns = root.mtime_ns = root.ctime_ns = now_ns;
  return tree;
}

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxNameBytes && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

std::map<std::uint64_t, std::uint32_t> link_counts(const Tree& tree) {
  std::map<std::uint64_t, std::uint32_t> counts;
  for (const auto& [ino, rec] : tree.inodes) {
    if (is_dir(rec) && ino == kRootIno)
      counts[ino] += 2;
    for (const auto& [name, child] : rec.entries) {
      const auto it = tree.inodes.find(child);
      if (it == tree.inodes.end())
        continue;
      if (is_dir(it->second)) {
        counts[child] += 2;
        counts[ino] += 1;
      } else {
        counts[child] += 1;
      }
    }
  }
  return counts;
}

Bytes encode_tree(const Tree& tree) {
  static const std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> none;
  return encode_tree_view(tree, {}, none);
}

Bytes encode_tree_view(
    const Tree& tree, std::span<const std::uint64_t> leave_out,
    const std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>& committed) {
  assert(std::is_sorted(leave_out.begin(), leave_out.end()));
  // The kept inodes, in one walk of the map (the later passes go over this vector), and every
  // name in a kept directory as (child, parent, name) in (parent, name) order. Names of inodes
  // left out or missing are dropped when the links are walked along with the inodes.
  std::vector<const InodeNode*> kept;
  kept.reserve(tree.inodes.size());
  std::vector<Link> links;
  std::size_t bound = 1 + 8 + 4;  // the exact size, but for names of inodes left out
  bool ordered = true;            // links already in child order (files created in name order)
  auto skip = leave_out.begin();
  for (const auto& node : tree.inodes) {
    while (skip != leave_out.end() && *skip < node.first)
      ++skip;
    if (skip != leave_out.end() && *skip == node.first)
      continue;
    const InodeRecord& r = node.second;
    kept.push_back(&node);
    bound += kMinInodeBytes + r.target.size();
    for (const auto& [name, value] : r.xattrs)
      bound += 8 + name.size() + value.size();
    for (const auto& [name, child] : r.entries) {
      ordered = ordered && (links.empty() || links.back().child <= child);
      links.push_back({child, node.first, &name});
      bound += 8 + 4 + name.size();
    }
  }
  if (!ordered)
    order_by_child(kept, links);

  Bytes out;
  out.reserve(bound);
  Stage w(out);
  std::uint8_t* p = w.room(1 + 8 + 4);
  p = put_be<1>(p, kTreeFormat);
  p = put_be<8>(p, tree.next_ino);
  w.done(put_be<4>(p, static_cast<std::uint32_t>(kept.size())));
  auto as_committed = committed.begin();
  auto link = links.cbegin();
  for (const auto* node : kept) {
    const std::uint64_t ino = node->first;
    const InodeRecord& r = node->second;
    while (as_committed != committed.end() && as_committed->first < ino)
      ++as_committed;
    const bool replaced = as_committed != committed.end() && as_committed->first == ino;
    p = w.room(kInodeFieldBytes);
    p = put_be<8>(p, ino);
    p = put_be<4>(p, r.mode);
    p = put_be<4>(p, r.uid);
    p = put_be<4>(p, r.gid);
    p = put_be<8>(p, replaced ? as_committed->second.first : r.size);
    p = put_be<8>(p, r.rdev);
    p = put_be<8>(p, static_cast<std::uint64_t>(r.atime_ns));
    p = put_be<8>(p, static_cast<std::uint64_t>(r.mtime_ns));
    p = put_be<8>(p, static_cast<std::uint64_t>(r.ctime_ns));
    w.done(put_be<8>(p, replaced ? as_committed->second.second : r.content_version));
    w.text(r.target);
    w.u32(static_cast<std::uint32_t>(r.xattrs.size()));
    for (const auto& [name, value] : r.xattrs) {
      w.text(name);
      w.text(value);
    }
    while (link != links.cend() && link->child < ino)
      ++link;  // a name of an inode left out, or of none
    auto last = link;
    while (last != links.cend() && last->child == ino)
      ++last;
    w.u32(static_cast<std::uint32_t>(last - link));
    for (; link != last; ++link) {
      w.u64(link->parent);
      w.text(*link->name);
    }
  }
  w.flush();
  return out;
}

std::error_code decode_tree(ByteView bytes, Tree& out) {
  wire::Reader r(bytes);
  if (r.u8() != kTreeFormat) {
    return r.failure() == wire::Reader::Failure::none ? TreeErrc::unsupported_format
                                                      : TreeErrc::malformed;
  }
  Tree tree;
  std::vector<std::tuple<std::uint64_t, std::string, std::uint64_t>> links;  // parent, name, child
  tree.next_ino = r.u64();
  const std::uint32_t count = r.count(kMaxInodes, kMinInodeBytes);
  std::uint64_t previous = 0;
  for (std::uint32_t i = 0; i < count && r.failure() == wire::Reader::Failure::none; ++i) {
    const std::uint64_t ino = r.u64();
    if (ino <= previous)
      return TreeErrc::malformed;  // strictly ascending, no duplicates
    previous = ino;
    InodeRecord rec;
    rec.mode = r.u32();
    rec.uid = r.u32();
    rec.gid = r.u32();
    rec.size = r.u64();
    rec.rdev = r.u64();
    rec.atime_ns = static_cast<std::int64_t>(r.u64());
    rec.mtime_ns = static_cast<std::int64_t>(r.u64());
    rec.ctime_ns = static_cast<std::int64_t>(r.u64());
    rec.content_version = r.u64();
    rec.target = r.text(kMaxSymlinkBytes);
    const std::uint32_t xattrs = r.count(kMaxXattrTotalBytes, 8);
    for (std::uint32_t x = 0; x < xattrs; ++x) {
      std::string name = r.text(kMaxXattrNameBytes);
      rec.xattrs[std::move(name)] = r.text(kMaxXattrValueBytes);
    }
    const std::uint32_t names = r.count(kMaxLinks, 8 + 4 + 1);
    for (std::uint32_t e = 0; e < names; ++e) {
      const std::uint64_t parent = r.u64();
      links.emplace_back(parent, r.text(kMaxNameBytes), ino);
    }
    tree.inodes.emplace(ino, std::move(rec));
  }
  if (!r.done())
    return TreeErrc::malformed;
  for (auto& [parent, name, child] : links) {
    const auto dir = tree.inodes.find(parent);
    if (dir == tree.inodes.end() || !is_dir(dir->second))
      return TreeErrc::inconsistent;
    if (!dir->second.entries.emplace(std::move(name), child).second)
      return TreeErrc::malformed;
  }
  if (auto ec = check_tree(tree))
    return ec;
  out = std::move(tree);
  return {};
}

std::error_code check_tree(const Tree& tree) {
  const auto root = tree.inodes.find(kRootIno);
  if (root == tree.inodes.end() || !is_dir(root->second))
    return TreeErrc::inconsistent;
  std::map<std::uint64_t, int> parents;
  for (const auto& [ino, rec] : tree.inodes) {
    if (ino == 0 || ino >= tree.next_ino)
      return TreeErrc::inconsistent;
    if (!is_dir(rec) && !rec.entries.empty())
      return TreeErrc::inconsistent;
    if (S_ISLNK(rec.mode) != !rec.target.empty() || xattr_bytes(rec) > kMaxXattrTotalBytes)
      return TreeErrc::inconsistent;
    for (const auto& [name, child] : rec.entries) {
      const auto it = tree.inodes.find(child);
      if (!valid_name(name) || it == tree.inodes.end() || child == kRootIno)
        return TreeErrc::inconsistent;
      if (is_dir(it->second) && ++parents[child] > 1)
        return TreeErrc::inconsistent;
    }
  }
  std::set<std::uint64_t> reachable;
  mark_reachable(tree, kRootIno, reachable);
  if (reachable.size() != tree.inodes.size())
    return TreeErrc::inconsistent;
  return {};
}

MergeResult merge_trees(const Tree& base, const Tree& local, const Tree& remote) {
  MergeResult result;
  Tree& out = result.tree;
  out.next_ino = std::max({base.next_ino, local.next_ino, remote.next_ino});

  std::set<std::uint64_t> all;
  for (const Tree* t : {&base, &local, &remote}) {
    for (const auto& [ino, rec] : t->inodes)
      all.insert(ino);
  }
  const auto find = [](const Tree& t, std::uint64_t ino) -> const InodeRecord* {
    const auto it = t.inodes.find(ino);
    return it == t.inodes.end() ? nullptr : &it->second;
  };
  const auto same = [](const InodeRecord* a, const InodeRecord* b) {
    return a == b || (a && b && *a == *b);
  };
  static const std::map<std::string, std::uint64_t> kNoEntries;
  for (const std::uint64_t ino : all) {
    const InodeRecord* b = find(base, ino);
    const InodeRecord* l = find(local, ino);
    const InodeRecord* r = find(remote, ino);
    if (same(l, b)) {
      if (r)
        out.inodes.emplace(ino, *r);
      continue;
    }
    if (same(r, b) || !r) {
      if (l)
        out.inodes.emplace(ino, *l);
      continue;
    }
    if (!l) {
      out.inodes.emplace(ino, *r);
      continue;
    }
    // Both sides changed a surviving inode.
    InodeRecord merged = *l;
    if (r->content_version > l->content_version) {
      merged.content_version = r->content_version;
      merged.size = r->size;
    }
    if (is_dir(merged)) {
      const auto& be = b && is_dir(*b) ? b->entries : kNoEntries;
      const auto& le = l->entries;
      const auto& re = is_dir(*r) ? r->entries : kNoEntries;
      std::set<std::string> names;
      for (const auto* m : {&be, &le, &re}) {
        for (const auto& [name, child] : *m)
          names.insert(name);
      }
      const auto lookup = [](const std::map<std::string, std::uint64_t>& m,
                             const std::string& name) -> std::optional<std::uint64_t> {
        const auto it = m.find(name);
        return it == m.end() ? std::nullopt : std::optional(it->second);
      };
      merged.entries.clear();
      for (const auto& name : names) {
        const auto bv = lookup(be, name);
        const auto lv = lookup(le, name);
        const auto rv = lookup(re, name);
        const auto pick = lv == bv ? rv : lv;
        if (pick)
          merged.entries.emplace(name, *pick);
      }
    }
    out.inodes.emplace(ino, std::move(merged));
  }

  // Repairs, in a fixed order so that every mount reaches the same result.
  if (!out.inodes.contains(kRootIno) || !is_dir(out.inodes[kRootIno])) {
    const InodeRecord* any_root =
        find(local, kRootIno) ? find(local, kRootIno) : find(remote, kRootIno);
    out.inodes[kRootIno] = any_root ? *any_root : make_empty_tree(0755, 0, 0, 0).inodes[kRootIno];
    out.inodes[kRootIno].mode = S_IFDIR | (out.inodes[kRootIno].mode & 07777);
  }
  std::set<std::uint64_t> has_parent;
  for (auto& [ino, rec] : out.inodes) {
    if (!is_dir(rec)) {
      rec.entries.clear();
      continue;
    }
    for (auto it = rec.entries.begin(); it != rec.entries.end();) {
      const auto child = out.inodes.find(it->second);
      const bool dangling = child == out.inodes.end() || it->second == kRootIno;
      const bool second_parent =
          !dangling && is_dir(child->second) && !has_parent.insert(it->second).second;
      if (dangling || second_parent)
        it = rec.entries.erase(it);
      else
        ++it;
    }
  }
  std::set<std::uint64_t> reachable;
  mark_reachable(out, kRootIno, reachable);
  for (auto& [dir_ino, rec] : out.inodes) {
    const std::uint64_t ino = dir_ino;
    if (!is_dir(rec) || reachable.contains(ino))
      continue;
    for (auto& [pino, prec] : out.inodes) {
      std::erase_if(prec.entries, [ino](const auto& e) { return e.second == ino; });
    }
    std::string name = "lost+found." + std::to_string(ino);
    for (int n = 1; out.inodes[kRootIno].entries.contains(name); ++n)
      name = "lost+found." + std::to_string(ino) + "." + std::to_string(n);
    out.inodes[kRootIno].entries.emplace(name, ino);
    mark_reachable(out, ino, reachable);
  }
  for (auto it = out.inodes.begin(); it != out.inodes.end();) {
    if (reachable.contains(it->first))
      ++it;
    else
      it = out.inodes.erase(it);
  }
  for (const std::uint64_t ino : all) {
    if (!out.inodes.contains(ino))
      result.dropped.insert(ino);
  }
  return result;
}

}  // namespace splitfs::fs
