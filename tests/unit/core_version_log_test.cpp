// The client's record of the highest version seen per file: raised one at a time or many in one
// transaction, never lowered, and kept across opens of the database.
#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include "core/version_log.hpp"
#include "tests/support/temp_dir.hpp"

using splitfs::Id;
using splitfs::core::VersionLog;
using splitfs::testing::TempDir;

namespace {

Id id_of(std::uint8_t seed) {
  Id id{};
  id.fill(seed);
  return id;
}

}  // namespace

TEST_CASE("versions are raised one by one or together, and never lowered") {
  TempDir dir("splitfs-versions");
  {
    VersionLog log(dir / "state.sqlite");
    CHECK(log.seen(id_of(1)) == 0);
    log.raise(id_of(1), 5);
    log.raise(id_of(1), 3);
    CHECK(log.seen(id_of(1)) == 5);
    const std::vector<std::pair<Id, std::uint64_t>> many{
        {id_of(1), 4}, {id_of(2), 7}, {id_of(3), 1}, {id_of(2), 9}, {id_of(1), 6}};
    log.raise_all(many);
    log.raise_all({});
    CHECK(log.seen(id_of(1)) == 6);
    CHECK(log.seen(id_of(2)) == 9);
    CHECK(log.seen(id_of(3)) == 1);
    CHECK(log.seen(id_of(4)) == 0);
  }
  VersionLog again(dir / "state.sqlite");
  CHECK(again.seen(id_of(1)) == 6);
  CHECK(again.seen(id_of(2)) == 9);
}
