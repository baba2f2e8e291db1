// A fast first look for YARA: where in a block its rules could match at all. YARA finds a
// string only where one of the string's atoms (short literals, at most 4 bytes, chosen when the
// rules compile) occurs; it walks its automaton over every byte to find them, at about 1 ns a
// byte. Hyperscan finds the same literals about five times faster. The stretches around each
// atom, as far as YARA's check of a string reaches from it, are then all YARA needs to see.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "common/bytes.hpp"

struct YR_RULES;
struct hs_database;
struct hs_scratch;

namespace splitfs::scan::detail {

// [begin, end) within a block.
struct Window {
  std::size_t begin = 0;
  std::size_t end = 0;
};

class AtomPrefilter {
  struct DatabaseFree {
    void operator()(hs_database* d) const;
  };
  struct ScratchFree {
    void operator()(hs_scratch* s) const;
  };

 public:
  // The atoms of compiled rules; nullopt when some string has none (YARA then checks it at every
  // byte), when libyara's layout is not the one read here, or when this CPU cannot run Hyperscan.
  static std::optional<AtomPrefilter> of(const YR_RULES& rules);

  // Scratch space for one thread's searches.
  class Scratch {
   public:
    explicit Scratch(const AtomPrefilter& filter);

   private:
    friend class AtomPrefilter;
    std::unique_ptr<hs_scratch, ScratchFree> scratch_;
  };

  // The windows of block YARA must scan, in order and apart, into out: around each atom, as far
  // as YARA's check of a string reaches from it. False when atoms are so many that YARA should
  // scan the whole block (out is then unspecified).
  bool windows(ByteView block, Scratch& scratch, std::vector<Window>& out) const;

 private:
  AtomPrefilter() = default;

  std::unique_ptr<hs_database, DatabaseFree> database_;
  std::unique_ptr<hs_scratch, ScratchFree> prototype_;  // cloned for each thread's Scratch
  std::size_t before_ = 0;  // bytes before an atom's end that YARA's check of a string may read
  std::size_t after_ = 0;   // bytes after an atom's end that it may read
};

}  // namespace splitfs::scan::detail
