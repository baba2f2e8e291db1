// The shared store's parsing and naming, without sockets: index locations (schema taken out,
// passwords refused, a bounded connect timeout added) and pack object keys.
#include <unistd.h>

#include <algorithm>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "store/shared_store.hpp"

using namespace splitfs::store;

TEST_CASE("index locations: the schema is ours, the rest is libpq's") {
  std::string error;
  auto index =
      parse_index("postgresql://splitfs@db:5432/splitfs?schema=door_a&sslmode=require", error);
  REQUIRE(index);
  CHECK(index->schema == "door_a");
  CHECK(index->conninfo ==
        "postgresql://splitfs@db:5432/splitfs?sslmode=require&connect_timeout=10");

  auto plain = parse_index("postgres://db/splitfs", error);
  REQUIRE(plain);
  CHECK(plain->schema == "splitfs");
  CHECK(plain->conninfo == "postgres://db/splitfs?connect_timeout=10");

  auto timed = parse_index("postgresql://db/x?connect_timeout=3", error);
  REQUIRE(timed);
  CHECK(timed->conninfo == "postgresql://db/x?connect_timeout=3");
}

TEST_CASE("index locations refuse passwords and bad schema names") {
  std::string error;
  CHECK_FALSE(parse_index("postgresql://u:hunter2@db/splitfs", error));
  CHECK(error.find("PGPASSFILE") != std::string::npos);
  CHECK(error.find("hunter2") == std::string::npos);
  CHECK_FALSE(parse_index("postgresql://u@db/splitfs?password=hunter2", error));
  CHECK_FALSE(parse_index("postgresql://u@db/splitfs?schema=Bad-Name", error));
  CHECK_FALSE(parse_index("postgresql://u@db/splitfs?schema=1abc", error));
  CHECK_FALSE(parse_index("postgresql://u@db/splitfs?schema=", error));
  CHECK_FALSE(parse_index("/nonexistent/index-file", error));
}

TEST_CASE("an index location may come from a file's first line") {
  const auto path =
      std::filesystem::temp_directory_path() / ("splitfs-index-" + std::to_string(::getpid()));
  {
    std::ofstream out(path);
    out << "postgresql://splitfs@db/splitfs?schema=door_b\nignored\n";
  }
  std::string error;
  auto index = parse_index(path.string(), error);
  std::filesystem::remove(path);
  REQUIRE(index);
  CHECK(index->schema == "door_b");
}

TEST_CASE("a pack object's layout: magic, then each share's record where positions say") {
  using splitfs::Bytes;
  using splitfs::ByteView;
  using splitfs::Id;
  Id a{};
  Id b{};
  a.fill(1);
  b.fill(2);
  const Bytes first(1000, 7);
  const Bytes empty;
  const std::vector<ShareInput> shares = {{a, first}, {b, empty}};
  PackLayout layout;
  lay_out_pack(shares, layout);
  Bytes object;
  for (const ByteView part : layout.parts)
    object.insert(object.end(), part.begin(), part.end());
  REQUIRE(static_cast<std::int64_t>(object.size()) == layout.size);
  CHECK(std::equal(pack::kFileMagic.begin(), pack::kFileMagic.end(), object.begin()));
  REQUIRE(layout.positions ==
          std::vector<std::int64_t>{8, static_cast<std::int64_t>(8 + 44 + first.size())});
  for (std::size_t i = 0; i < shares.size(); ++i) {
    pack::RecordHeader header{};
    const auto at = object.begin() + layout.positions[i];
    std::copy_n(at, header.size(), header.begin());
    const ByteView blob(&*at + header.size(), shares[i].data.size());
    CHECK(pack::check_record(header, shares[i].id, blob));
    CHECK_FALSE(pack::check_record(header, shares[1 - i].id, blob));
  }
  CHECK(layout.size == static_cast<std::int64_t>(8 + 2 * 44 + first.size()));
}

TEST_CASE("pack object keys are fixed-width hex under packs/") {
  CHECK(pack_key(1) == "packs/0000000000000001");
  CHECK(pack_key(42) == "packs/000000000000002a");
  CHECK(pack_key(0x7fffffffffffffffLL) == "packs/7fffffffffffffff");
}

TEST_CASE("opening a shared store with bad flags says what is wrong") {
  CHECK_THROWS_AS(open_shared("s3://x", "postgresql://db/x", {}), StoreError);
  CHECK_THROWS_WITH(open_shared("s3://bucket?endpoint=https://127.0.0.1:1", "", {}),
                    Catch::Contains("--index"));
}
