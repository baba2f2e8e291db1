// Space efficiency through the library against real servers, as ratios on small data: the same
// content under another name, in-place edits and appends add little; text is stored compressed
// and random data is not; deleting everything and compacting gives the space back.
#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <splitfs/client.hpp>

#include "tests/support/random_bytes.hpp"
#include "tests/support/servers.hpp"

namespace fs = std::filesystem;
using splitfs::testing::random_string;
using splitfs::testing::TempDir;
using splitfs::testing::TestServers;

namespace {

// Source-like text: functions made from a few dozen line templates with varying names.
std::string source_text(std::size_t n, std::uint64_t seed) {
  static const char* const lines[] = {
      "  for (std::size_t i = 0; i < count; ++i) {\n",
      "    total += values[i] * weight;\n",
      "  }\n",
      "  if (!result) {\n    return std::nullopt;\n  }\n",
      "  const auto it = index.find(key);\n",
      "  std::lock_guard lock(mutex_);\n",
      "  // Keeps the invariant: every entry is reachable from the root.\n",
      "  return {begin, end};\n",
      "  throw std::runtime_error(\"cannot open \" + path.string());\n",
      "  buffer.insert(buffer.end(), data.begin(), data.end());\n"};
  std::mt19937_64 rng(seed);
  std::string out;
  while (out.size() < n) {
    out += "std::optional<Value> function_" + std::to_string(rng() % 5000) +
           "(const Table& table, std::string_view key) {\n";
    for (int l = 0; l < 6; ++l)
      out += lines[rng() % std::size(lines)];
    out += "}\n\n";
  }
  out.resize(n);
  return out;
}

struct Totals {
  std::uint64_t files = 0, logical = 0, unique = 0, stored = 0, garbage = 0, disk = 0;
};

struct Fixture {
  TestServers servers;
  TempDir work{"splitfs-dedup"};
  fs::path home = work / "client";

  Fixture() { splitfs::init(home, splitfs::testing::pinned_options(servers.https, servers.tcp)); }
  void store(const std::string& name, const std::string& data) {
    const fs::path path = work / "input";
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        .write(data.data(), static_cast<std::streamsize>(data.size()));
    splitfs::Client(home).store(path, name);
  }
  Totals totals() {
    Totals t;
    const auto usage = splitfs::Client(home).df();
    REQUIRE(usage.size() == 2);
    for (const auto& u : usage) {
      t.files = std::max(t.files, u.files);
      t.logical += u.logical_bytes;
      t.unique += u.unique_logical_bytes;
      t.stored += u.stored_bytes;
      t.garbage += u.garbage_bytes;
      t.disk += u.disk_bytes;
    }
    return t;
  }
  void compact_now() {
    for (auto* server : {&servers.https, &servers.tcp}) {
      const auto result = server->command({"compact", "--grace", "0"});
      INFO(result.output);
      REQUIRE(result.status == 0);
    }
  }
};

double ratio(std::uint64_t a, std::uint64_t b) {
  return static_cast<double>(a) / static_cast<double>(b);
}

}  // namespace

TEST_CASE("a copy, in-place edits and an append add little beyond what changed",
          "[storage][dedup]") {
  Fixture f;
  const std::uint32_t segment = splitfs::Client(f.home).segment_bytes();
  const std::size_t size = 32 * std::size_t{segment};  // 4 MiB in default segments
  std::string data = random_string(size, 1);
  f.store("original", data);
  const Totals first = f.totals();
  CHECK(first.files == 1);
  CHECK(ratio(first.disk, size) <= 1.02);

  f.store("copy", data);
  const Totals copied = f.totals();
  CHECK(copied.files == 2);
  CHECK(copied.stored == first.stored);  // not one more share
  CHECK(ratio(copied.logical, copied.unique) == Approx(2.0));
  CHECK(ratio(copied.disk - first.disk, size) <= 0.005);

  // Three 1-byte edits in three segments: each changes one share, half a segment.
  for (std::size_t k : {3u, 17u, 29u})
    data[k * segment + std::size_t{5} * 1024 + 7] ^= 0x01;
  f.store("original", data);
  const Totals edited = f.totals();
  const double per_edit = ratio(segment / 2, size);
  CHECK(ratio(edited.stored - copied.stored, size) <= 3 * per_edit * 1.01);
  CHECK(ratio(edited.stored - copied.stored, size) >= 3 * per_edit * 0.99);
  // The copy still holds the replaced shares; once it goes, they wait for compaction, then go.
  CHECK(edited.garbage == 0);
  splitfs::Client(f.home).remove("copy");
  CHECK(ratio(f.totals().garbage, size) == Approx(3 * per_edit).epsilon(0.01));
  f.compact_now();
  const Totals compacted = f.totals();
  CHECK(compacted.garbage == 0);
  CHECK(compacted.stored == edited.stored - first.stored * 3 / 64);  // 3 of the 64 shares

  const std::size_t appended = 8 * std::size_t{segment};
  data += random_string(appended, 2);
  f.store("original", data);
  const Totals grown = f.totals();
  CHECK(ratio(grown.stored - compacted.stored, appended) <= 1.002);
  CHECK(ratio(grown.stored - compacted.stored, appended) >= 1.0);
  CHECK(ratio(grown.disk - compacted.disk, size) <= ratio(appended, size) + 0.002);

  const auto back = splitfs::Client(f.home).read("original", 0, data.size());
  CHECK(std::string(back.begin(), back.end()) == data);
}

TEST_CASE("text is stored compressed and random data is not", "[storage][compression]") {
  Fixture f;
  const std::string text = source_text(2 << 20, 3);
  f.store("small.cpp", text);
  const Totals small = f.totals();
  CHECK(ratio(small.unique, small.stored) >= 3.0);  // source text shrinks to under a third

  // A large text file goes into larger segments, whose wider context compresses better still.
  const std::string big = source_text(12 << 20, 4);
  f.store("big.cpp", big);
  const Totals both = f.totals();
  const double big_ratio = ratio(both.unique - small.unique, both.stored - small.stored);
  CHECK(big_ratio >= ratio(small.unique, small.stored));
  const auto stat = splitfs::Client(f.home).stat("big.cpp");
  CHECK(stat.segment_bytes == 4u << 20);
  CHECK(splitfs::Client(f.home).stat("small.cpp").segment_bytes ==
        splitfs::Client(f.home).segment_bytes());

  const std::string noise = random_string(3 << 20, 5);
  f.store("noise.bin", noise);
  const Totals all = f.totals();
  const double noise_ratio = ratio(all.unique - both.unique, all.stored - both.stored);
  CHECK(noise_ratio <= 1.0);    // encryption adds a few bytes per share
  CHECK(noise_ratio >= 0.999);  // and nothing else
  CHECK(splitfs::Client(f.home).stat("noise.bin").segment_bytes ==
        splitfs::Client(f.home).segment_bytes());

  splitfs::Client client(f.home);
  for (const auto& [name, content] :
       {std::pair<std::string, const std::string*>{"small.cpp", &text},
        {"big.cpp", &big},
        {"noise.bin", &noise}}) {
    const auto back = client.read(name, 0, content->size());
    CHECK(std::string(back.begin(), back.end()) == *content);
  }
}

TEST_CASE("deleting everything and compacting gives the space back", "[storage][dedup]") {
  Fixture f;
  f.store("a", random_string(3 << 20, 6));
  f.store("b", source_text(1 << 20, 7));
  f.store("c", random_string(2 << 20, 8));
  const Totals peak = f.totals();
  REQUIRE(peak.disk > (5u << 20));
  std::uint64_t peak_on_disk = 0;
  for (auto* server : {&f.servers.https, &f.servers.tcp}) {
    for (const auto& e : fs::recursive_directory_iterator(server->data_dir() / "store")) {
      if (e.is_regular_file())
        peak_on_disk += e.file_size();
    }
  }

  splitfs::Client client(f.home);
  for (const char* name : {"a", "b", "c"})
    client.remove(name);
  CHECK(f.totals().garbage == peak.stored);
  f.compact_now();
  const Totals left = f.totals();
  CHECK(left.files == 0);
  CHECK(left.disk == 0);
  CHECK(left.garbage == 0);
  std::uint64_t on_disk = 0;
  for (auto* server : {&f.servers.https, &f.servers.tcp}) {
    const auto stats = server->command({"stats"});
    INFO(stats.output);
    CHECK(stats.status == 0);
    CHECK(stats.output.find("packs                 0 files") != std::string::npos);
    for (const auto& e : fs::recursive_directory_iterator(server->data_dir() / "store")) {
      if (e.is_regular_file())
        on_disk += e.file_size();
    }
  }
  CHECK(ratio(on_disk, peak_on_disk) <= 0.05);  // the index and its log; the packs are gone
}
