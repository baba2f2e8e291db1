#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <vector>

#include "store/pack.hpp"
#include "store/store.hpp"
#include "tests/support/random_bytes.hpp"
#include "tests/support/temp_dir.hpp"

namespace fs = std::filesystem;
using splitfs::Bytes;
using splitfs::Id;
using namespace splitfs::store;
using splitfs::testing::random_bytes;
using splitfs::testing::TempDir;

namespace {

constexpr long kTmpfsMagic = 0x01021994;

// The share of the file's pages the page cache holds.
double resident_fraction(const fs::path& path) {
  pack::Fd fd;
  REQUIRE_FALSE(pack::open_file(path, O_RDONLY, 0, fd));
  const auto size = static_cast<std::size_t>(fs::file_size(path));
  REQUIRE(size > 0);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd.get(), 0);
  REQUIRE(map != MAP_FAILED);
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> pages((size + page - 1) / page);
  const int rc = ::mincore(map, size, pages.data());
  ::munmap(map, size);
  REQUIRE(rc == 0);
  std::size_t resident = 0;
  for (unsigned char p : pages)
    resident += p & 1u;
  return static_cast<double>(resident) / static_cast<double>(pages.size());
}

// Whether this kernel and the filesystem of `dir` take uncached writes (RWF_DONTCACHE, 0x80).
bool drops_behind(const fs::path& dir) {
  pack::Fd fd;
  REQUIRE_FALSE(pack::open_file(dir / "probe", O_WRONLY | O_CREAT | O_TRUNC, 0600, fd));
  char byte = 1;
  iovec iov{&byte, 1};
  const bool ok = ::pwritev2(fd.get(), &iov, 1, 0, 0x80) == 1;
  const bool refused = !ok && errno == EOPNOTSUPP;
  REQUIRE((ok || refused));
  fs::remove(dir / "probe");
  return ok;
}

// count shares of size random bytes (seeds from seed on), ids 0, 1, ...; blobs hold the bytes the
// inputs view.
struct Shares {
  std::vector<Bytes> blobs;
  std::vector<ShareInput> in;
};

Shares make_shares(std::size_t count, std::size_t size, std::uint64_t seed) {
  Shares out;
  out.blobs.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    out.blobs.push_back(random_bytes(size, seed + i));
    Id id{};
    id[0] = static_cast<std::uint8_t>(i);
    id[1] = static_cast<std::uint8_t>(i >> 8);
    out.in.push_back({id, out.blobs.back()});
  }
  return out;
}

// Commits version 1 of user u's file 1 with refs.
void commit_file(Store& store, const std::vector<ShareRef>& refs) {
  std::vector<Id> missing;
  Id file{};
  file[31] = 1;
  REQUIRE_FALSE(
      store.commit("u", file, 1, refs, splitfs::as_bytes("e"), splitfs::as_bytes("m"), missing));
}

// Writes `data` as records of 64 KiB (header, blob) with `caching`, syncs, and reads it back.
void write_records(const fs::path& path, const Bytes& data, pack::Caching caching) {
  pack::Fd fd;
  REQUIRE_FALSE(pack::open_file(path, O_RDWR | O_CREAT | O_TRUNC, 0600, fd));
  std::vector<pack::RecordHeader> headers(data.size() / (64u << 10));
  std::vector<iovec> iov;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    iov.push_back({headers[i].data(), headers[i].size()});
    iov.push_back({const_cast<std::uint8_t*>(data.data()) + i * (64u << 10), 64u << 10});
  }
  REQUIRE_FALSE(pack::write_all(fd.get(), iov, 0, caching));
  REQUIRE_FALSE(pack::sync_data(fd.get()));

  Bytes back(data.size());
  std::vector<iovec> in;
  for (std::size_t i = 0; i < headers.size(); ++i) {
    in.push_back({headers[i].data(), headers[i].size()});
    in.push_back({back.data() + i * (64u << 10), 64u << 10});
  }
  bool short_read = false;
  REQUIRE_FALSE(pack::read_all(fd.get(), in, 0, short_read));
  CHECK_FALSE(short_read);
  CHECK((back == data));
}

}  // namespace

TEST_CASE("a pack write that drops behind keeps every byte and, where it can, leaves no cache") {
  TempDir tmp("splitfs-pack");
  const Bytes data = random_bytes(8u << 20, 1);

  write_records(tmp / "kept.pack", data, pack::Caching::keep);
  // The cached write shows that the count below means something here.
  CHECK(resident_fraction(tmp / "kept.pack") > 0.9);

  // The read back in write_records caches pages again: count before it, on a second file.
  const fs::path dropped = tmp / "dropped.pack";
  {
    pack::Fd fd;
    REQUIRE_FALSE(pack::open_file(dropped, O_WRONLY | O_CREAT | O_TRUNC, 0600, fd));
    Bytes copy = data;
    iovec iov{copy.data(), copy.size()};
    REQUIRE_FALSE(
        pack::write_all(fd.get(), std::span<iovec>(&iov, 1), 0, pack::Caching::drop_behind));
    REQUIRE_FALSE(pack::sync_data(fd.get()));
  }
  if (drops_behind(tmp.path())) {
    CHECK(resident_fraction(dropped) < 0.25);
  } else {
    WARN("this kernel has no uncached writes (Linux 6.14): only the bytes are checked");
  }
  write_records(tmp / "records.pack", data, pack::Caching::drop_behind);
}

TEST_CASE(
    "where the filesystem refuses uncached writes, a drop-behind write goes through the cache") {
  struct statfs st {};
  if (::statfs("/dev/shm", &st) != 0 || st.f_type != kTmpfsMagic) {
    WARN("no tmpfs at /dev/shm: the fallback is not exercised");
    return;
  }
  TempDir dir("splitfs-pack", "/dev/shm");
  CHECK_FALSE(drops_behind(dir.path()));  // tmpfs has no RWF_DONTCACHE, so the fallback runs
  write_records(dir / "records.pack", random_bytes(1u << 20, 2), pack::Caching::drop_behind);
}

TEST_CASE("the store writes a large file's shares without caching them, small files' with") {
  TempDir tmp("splitfs-pack");
  if (!drops_behind(tmp.path())) {
    WARN("this kernel has no uncached writes (Linux 6.14): nothing to check");
    return;
  }
  auto store_shares = [&](const fs::path& dir, std::size_t count, std::size_t size) {
    auto store = Store::open(dir);
    const Shares shares = make_shares(count, size, 10);
    REQUIRE_FALSE(store->put_shares("u", shares.in));
    std::vector<ShareRef> refs;
    for (const ShareInput& share : shares.in)
      refs.push_back({share.id, 1});
    commit_file(*store, refs);
    const fs::path pack = dir / "packs" / pack::file_name(1);
    REQUIRE(fs::exists(pack));
    return resident_fraction(pack);
  };
  // A large file's shares, 64 KiB from a 128 KiB segment, half that when it compresses.
  CHECK(store_shares(tmp / "large", 64, 32u << 10) < 0.25);
  CHECK(store_shares(tmp / "small", 256, 2u << 10) > 0.9);
}

TEST_CASE("a compaction writes the records it moves without caching them") {
  TempDir tmp("splitfs-pack");
  if (!drops_behind(tmp.path())) {
    WARN("this kernel has no uncached writes (Linux 6.14): nothing to check");
    return;
  }
  auto store = Store::open(tmp / "store");
  const Shares shares = make_shares(1024, 2u << 10, 100);
  REQUIRE_FALSE(store->put_shares("u", shares.in));
  std::vector<ShareRef> kept;
  for (std::size_t i = 0; i < shares.in.size(); i += 4)
    kept.push_back({shares.in[i].id, 1});
  commit_file(*store, kept);
  CHECK(resident_fraction(tmp / "store" / "packs" / pack::file_name(1)) > 0.9);

  CompactionReport report;
  REQUIRE_FALSE(store->compact({std::chrono::seconds(0), "test", nullptr}, report));
  REQUIRE(report.packs_rewritten == 1);
  std::vector<fs::path> packs;
  for (const auto& e : fs::directory_iterator(tmp / "store" / "packs"))
    packs.push_back(e.path());
  REQUIRE(packs.size() == 1);
  CHECK(packs.front().filename() != pack::file_name(1));
  CHECK(resident_fraction(packs.front()) < 0.25);
  for (const ShareRef& ref : kept) {
    Bytes out;
    REQUIRE_FALSE(store->get_share("u", ref.id, out));
    CHECK(out.size() == 2u << 10);
  }
}
