// Reference counting shared by both Store implementations (store.cpp, shared_store.cpp): what a
// commit changes in each share's count when a file's list of share ids goes from old to new.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "common/bytes.hpp"

namespace splitfs::store {

// Reference count changes from the old sorted id list to the new one, zero deltas left out.
std::vector<std::pair<Id, std::int64_t>> ref_deltas(const std::vector<Id>& old_ids,
                                                    const std::vector<Id>& new_ids);

}  // namespace splitfs::store
