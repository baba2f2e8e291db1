// "Did you mean ...?" for a stored name that does not exist: the stored names closest to it by
// edit distance, or with the same last component (a file stored under a folder).
#pragma once

#include <string>
#include <vector>

namespace splitfs::cli {

// Edit distance (insertions, deletions, substitutions, adjacent swaps) between a and b, or
// limit + 1 as soon as it exceeds limit.
std::size_t edit_distance(const std::string& a, const std::string& b, std::size_t limit);

// Up to `most` names from `names` that `wanted` was probably meant to be, best first.
std::vector<std::string> suggestions(const std::string& wanted,
                                     const std::vector<std::string>& names, std::size_t most = 3);

// " - did you mean 'a' or 'b'?" for the suggestions, or "" if there are none.
std::string did_you_mean(const std::vector<std::string>& suggested);

}  // namespace splitfs::cli
