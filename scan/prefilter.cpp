#include "scan/prefilter.hpp"

#include <hs/hs.h>
#include <yara.h>

#include <algorithm>
#include <new>
#include <string>

namespace splitfs::scan::detail {

namespace {

// Past this many windows in a block, or half its bytes, YARA scans the whole block: the windows
// would save little, and the search stops early (text full of short words like "eval").
constexpr std::size_t kMaxWindows = 32;
// Bytes a check may read beside what it matches: the byte before and after a fullword string.
constexpr std::size_t kSlack = 8;
// Atoms are at most YR_MAX_ATOM_LENGTH (4) bytes; a deeper trie means a layout not understood.
constexpr std::size_t kMaxAtomBytes = 16;

struct Atoms {
  std::vector<std::string> literals;
  std::vector<bool> strings_seen;  // by string index: some atom leads to it
  std::size_t max_backtrack = 0;
  bool understood = true;
};

#if YR_MAJOR_VERSION == 4 && YR_MINOR_VERSION == 2
// libyara 4.2 keeps its Aho-Corasick automaton in a table: the transition of state s on byte b is
// at [s + b + 1], valid when its low bits hold b + 1; a state's matches start at
// ac_match_pool[ac_match_table[s] - 1]. The trie's paths to states with matches are the atoms.
void collect(const YR_RULES& rules, std::uint32_t state, std::string& path, Atoms& atoms) {
  if (path.size() > kMaxAtomBytes) {
    atoms.understood = false;
    return;
  }
  if (const std::uint32_t first = rules.ac_match_table[state]; first != 0) {
    atoms.literals.push_back(path);
    for (const YR_AC_MATCH* m = &rules.ac_match_pool[first - 1]; m != nullptr; m = m->next) {
      const auto index = static_cast<std::size_t>(m->string - rules.strings_table);
      if (m->string < rules.strings_table || index >= atoms.strings_seen.size()) {
        atoms.understood = false;
        return;
      }
      atoms.strings_seen[index] = true;
      atoms.max_backtrack = std::max<std::size_t>(atoms.max_backtrack, m->backtrack);
    }
  }
  for (std::uint32_t byte = 0; byte < 256 && atoms.understood; ++byte) {
    const YR_AC_TRANSITION t = rules.ac_transition_table[state + byte + 1];
    if (YR_AC_INVALID_TRANSITION(t, byte + 1))
      continue;
    path.push_back(static_cast<char>(byte));
    collect(rules, static_cast<std::uint32_t>(YR_AC_NEXT_STATE(t)), path, atoms);
    path.pop_back();
  }
}

Atoms atoms_of(const YR_RULES& rules) {
  Atoms atoms;
  atoms.strings_seen.assign(rules.num_strings, false);
  // Matches at the root are strings without an atom: YARA checks them at every byte.
  if (rules.ac_match_table[YR_AC_ROOT_STATE] != 0) {
    atoms.understood = false;
    return atoms;
  }
  std::string path;
  collect(rules, YR_AC_ROOT_STATE, path, atoms);
  return atoms;
}
#else
Atoms atoms_of(const YR_RULES&) {
  return {{}, {}, 0, false};
}
#endif

struct Search {
  std::size_t size;
  std::size_t before;
  std::size_t after;
  std::vector<Window>& out;
  std::size_t covered = 0;
  bool in_order = true;
};

int on_atom(unsigned int /*id*/, unsigned long long /*from*/, unsigned long long to,
            unsigned int /*flags*/, void* context) {
  auto& s = *static_cast<Search*>(context);
  const auto at = static_cast<std::size_t>(to);
  const Window w{at > s.before ? at - s.before : 0, std::min(s.size, at + s.after)};
  if (!s.out.empty() && w.begin >= s.out.back().begin && w.begin <= s.out.back().end) {
    if (w.end > s.out.back().end) {
      s.covered += w.end - s.out.back().end;
      s.out.back().end = w.end;
    }
  } else {
    s.in_order = s.in_order && (s.out.empty() || w.begin > s.out.back().end);
    s.out.push_back(w);
    s.covered += w.end - w.begin;
  }
  return s.out.size() > kMaxWindows || 2 * s.covered > s.size ? 1 : 0;
}

}  // namespace

std::optional<AtomPrefilter> AtomPrefilter::of(const YR_RULES& rules) {
  if (hs_valid_platform() != HS_SUCCESS)
    return std::nullopt;
  const Atoms atoms = atoms_of(rules);
  if (!atoms.understood || atoms.literals.empty() ||
      std::find(atoms.strings_seen.begin(), atoms.strings_seen.end(), false) !=
          atoms.strings_seen.end())
    return std::nullopt;
  std::size_t longest = 0;
  for (std::uint32_t i = 0; i < rules.num_strings; ++i)
    longest =
        std::max<std::size_t>(longest, static_cast<std::size_t>(rules.strings_table[i].length));

  std::vector<const char*> literals;
  std::vector<std::size_t> lengths;
  std::vector<unsigned int> flags(atoms.literals.size(), 0);
  std::vector<unsigned int> ids(atoms.literals.size(), 0);
  for (const std::string& a : atoms.literals) {
    literals.push_back(a.data());
    lengths.push_back(a.size());
  }
  hs_database_t* database = nullptr;
  hs_compile_error_t* error = nullptr;
  if (hs_compile_lit_multi(literals.data(), flags.data(), ids.data(), lengths.data(),
                           static_cast<unsigned int>(literals.size()), HS_MODE_BLOCK, nullptr,
                           &database, &error) != HS_SUCCESS) {
    hs_free_compile_error(error);
    return std::nullopt;
  }
  AtomPrefilter filter;
  filter.database_.reset(database);
  hs_scratch_t* prototype = nullptr;
  if (hs_alloc_scratch(database, &prototype) != HS_SUCCESS)
    throw std::bad_alloc();
  filter.prototype_.reset(prototype);
  // A string's check starts `backtrack` bytes before the atom's end and reads at most
  // YR_RE_SCAN_LIMIT bytes back (a regular expression's part before its atom) or forward (the
  // rest of it); a literal string is compared whole, twice its length when wide.
  filter.before_ = atoms.max_backtrack + YR_RE_SCAN_LIMIT + kSlack;
  filter.after_ = std::max<std::size_t>(YR_RE_SCAN_LIMIT, 2 * longest) + kSlack;
  return filter;
}

void AtomPrefilter::DatabaseFree::operator()(hs_database* d) const {
  hs_free_database(d);
}

void AtomPrefilter::ScratchFree::operator()(hs_scratch* s) const {
  hs_free_scratch(s);
}

AtomPrefilter::Scratch::Scratch(const AtomPrefilter& filter) {
  hs_scratch_t* scratch = nullptr;
  if (hs_clone_scratch(filter.prototype_.get(), &scratch) != HS_SUCCESS)
    throw std::bad_alloc();
  scratch_.reset(scratch);
}

bool AtomPrefilter::windows(ByteView block, Scratch& scratch, std::vector<Window>& out) const {
  out.clear();
  Search search{block.size(), before_, after_, out};
  const hs_error_t result =
      hs_scan(database_.get(), reinterpret_cast<const char*>(block.data()),
              static_cast<unsigned int>(block.size()), 0, scratch.scratch_.get(), on_atom, &search);
  if (result != HS_SUCCESS)
    return false;  // stopped as too dense, or failed: either way the whole block
  if (!search.in_order) {
    std::sort(out.begin(), out.end(),
              [](const Window& a, const Window& b) { return a.begin < b.begin; });
    std::vector<Window> merged;
    for (const Window& w : out) {
      if (!merged.empty() && w.begin <= merged.back().end)
        merged.back().end = std::max(merged.back().end, w.end);
      else
        merged.push_back(w);
    }
    out = std::move(merged);
  }
  return true;
}

}  // namespace splitfs::scan::detail
