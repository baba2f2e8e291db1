// The journal when the disk fails the sync of its folder after a record was renamed into place:
// the record is the journal's all the same, the data file it replaced stays until the folder is
// synced, and the next sync_pending() syncs it. The failure is real to the journal: this program
// defines fsync() itself (the journal's calls bind to it), failing it for a directory on demand.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <filesystem>
#include <fstream>

#include "fs/journal.hpp"
#include "tests/support/temp_dir.hpp"

using namespace splitfs::fs;
using splitfs::testing::TempDir;

namespace {

std::atomic<bool> fail_folder_syncs{false};

JournalFile record_of(std::uint64_t sequence, const std::string& data_name, std::uint64_t bytes,
                      std::uint64_t ino = 42) {
  JournalFile f;
  f.ino = ino;
  f.sequence = sequence;
  f.data_name = data_name;
  f.segment_bytes = 4096;
  f.bytes = bytes;
  f.mode = 0644;
  f.state.size = bytes;
  f.state.dirty = true;
  return f;
}

// A data file in the journal's folder, open for put_file_synced().
int data_file(const Journal& journal, const std::string& name) {
  std::ofstream(journal.dir() / name) << "bytes of " << name;
  const int fd = ::open((journal.dir() / name).c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  return fd;
}

}  // namespace

// Replaces the C library's fsync() in this program: a directory's fails while asked to.
extern "C" int fsync(int fd) {
  struct stat st {};
  if (fail_folder_syncs.load() && ::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    errno = EIO;
    return -1;
  }
  return static_cast<int>(::syscall(SYS_fsync, fd));
}

TEST_CASE("a record whose folder sync failed stays the journal's, and the next sync completes it",
          "[fs][journal]") {
  const TempDir root("fs-journal-sync");
  Journal journal(root.path());
  const JournalFile old_record = record_of(1, "wb-old", 100);
  std::ofstream(journal.dir() / "wb-old") << "old bytes";
  REQUIRE(journal.put_file(old_record) == 0);

  const int fd = data_file(journal, "wb-new");
  fail_folder_syncs = true;
  {
    // The failure this test depends on.
    const int dir_fd = ::open(journal.dir().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dir_fd >= 0);
    CHECK(::fsync(dir_fd) == -1);
    ::close(dir_fd);
  }
  const Journal::SyncedPut put = journal.put_file_synced(record_of(2, "wb-new", 200), fd);
  ::close(fd);
  CHECK_FALSE(put.durable);
  CHECK(put.replaced_bytes == 100);
  // The new record is in place and counted; the old data file stays, as a crash may bring back
  // the record that names it.
  const auto current = journal.current(42);
  REQUIRE(current.has_value());
  CHECK(current->first == 2);
  CHECK(current->second == "wb-new");
  CHECK(journal.bytes() == 200);
  CHECK(std::filesystem::exists(journal.dir() / "wb-old"));
  // While the folder's sync fails, so does sync_pending(), and nothing goes.
  CHECK_FALSE(journal.sync_pending());
  CHECK(std::filesystem::exists(journal.dir() / "wb-old"));

  fail_folder_syncs = false;
  CHECK(journal.sync_pending());
  CHECK_FALSE(std::filesystem::exists(journal.dir() / "wb-old"));
  CHECK(std::filesystem::exists(journal.dir() / "wb-new"));
  CHECK(journal.sync_pending());  // nothing left to do

  // A put whose folder sync succeeds is durable at once and removes what it replaced.
  const int next_fd = data_file(journal, "wb-next");
  const Journal::SyncedPut next = journal.put_file_synced(record_of(3, "wb-next", 300), next_fd);
  ::close(next_fd);
  CHECK(next.durable);
  CHECK(next.replaced_bytes == 200);
  CHECK_FALSE(std::filesystem::exists(journal.dir() / "wb-new"));

  // A first record replaces no data file: the folder still waits for its sync.
  const int first_fd = data_file(journal, "wb-first");
  fail_folder_syncs = true;
  const Journal::SyncedPut first =
      journal.put_file_synced(record_of(4, "wb-first", 10, 43), first_fd);
  ::close(first_fd);
  CHECK_FALSE(first.durable);
  CHECK(first.replaced_bytes == 0);
  CHECK_FALSE(journal.sync_pending());
  fail_folder_syncs = false;
  CHECK(journal.sync_pending());
  CHECK(journal.file_count() == 2);
}
