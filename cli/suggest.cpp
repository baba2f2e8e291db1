#include "cli/suggest.hpp"

#include <algorithm>
#include <tuple>

namespace splitfs::cli {

namespace {

// Names longer than this are compared only by their last component: the distance costs
// length squared.
constexpr std::size_t kMaxCompared = 512;

std::string last_component(const std::string& name) {
  const auto slash = name.find_last_of('/');
  return slash == std::string::npos ? name : name.substr(slash + 1);
}

}  // namespace

std::size_t edit_distance(const std::string& a, const std::string& b, std::size_t limit) {
  const std::size_t n = a.size();
  const std::size_t m = b.size();
  if ((n > m ? n - m : m - n) > limit)
    return limit + 1;
  // Optimal string alignment distance, three rows.
  std::vector<std::size_t> before(m + 1), previous(m + 1), row(m + 1);
  for (std::size_t j = 0; j <= m; ++j)
    previous[j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    row[0] = i;
    std::size_t best = row[0];
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      row[j] = std::min({previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        row[j] = std::min(row[j], before[j - 2] + 1);
      best = std::min(best, row[j]);
    }
    if (best > limit)
      return limit + 1;
    before.swap(previous);
    previous.swap(row);
  }
  return std::min(previous[m], limit + 1);
}

std::vector<std::string> suggestions(const std::string& wanted,
                                     const std::vector<std::string>& names, std::size_t most) {
  // A third of the name may be wrong, at least one and at most four characters.
  const std::size_t limit = std::clamp<std::size_t>(wanted.size() / 3, 1, 4);
  const std::string wanted_last = last_component(wanted);
  std::vector<std::tuple<std::size_t, std::string>> ranked;
  for (const auto& name : names) {
    if (name == wanted)
      continue;
    std::size_t distance = limit + 1;
    if (name.size() <= kMaxCompared && wanted.size() <= kMaxCompared)
      distance = edit_distance(wanted, name, limit);
    // "report.pdf" for "docs/report.pdf", or the other way round.
    if (distance > limit && !wanted_last.empty() && last_component(name) == wanted_last)
      distance = limit;
    if (distance <= limit)
      ranked.emplace_back(distance, name);
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> out;
  for (const auto& [distance, name] : ranked) {
    if (out.size() == most)
      break;
    out.push_back(name);
  }
  return out;
}

std::string did_you_mean(const std::vector<std::string>& suggested) {
  if (suggested.empty())
    return "";
  std::string out = " - did you mean ";
  for (std::size_t i = 0; i < suggested.size(); ++i) {
    if (i > 0)
      out += i + 1 == suggested.size() ? " or " : ", ";
    out += "'" + suggested[i] + "'";
  }
  return out + "?";
}

}  // namespace splitfs::cli
