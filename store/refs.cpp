#include "store/refs.hpp"

namespace splitfs::store {

std::vector<std::pair<Id, std::int64_t>> ref_deltas(const std::vector<Id>& old_ids,
                                                    const std::vector<Id>& new_ids) {
  std::vector<std::pair<Id, std::int64_t>> deltas;
  std::size_t i = 0;
  std::size_t j = 0;
  while (i < old_ids.size() || j < new_ids.size()) {
    const bool take_old = j == new_ids.size() || (i < old_ids.size() && old_ids[i] <= new_ids[j]);
    const Id id = take_old ? old_ids[i] : new_ids[j];
    std::int64_t delta = 0;
    for (; i < old_ids.size() && old_ids[i] == id; ++i)
      --delta;
    for (; j < new_ids.size() && new_ids[j] == id; ++j)
      ++delta;
    if (delta != 0)
      deltas.emplace_back(id, delta);
  }
  return deltas;
}

}  // namespace splitfs::store
