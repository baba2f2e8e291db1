// Pack files: the on-disk format of share records and the POSIX calls that write and read them.
//
// A pack starts with the 8-byte magic "SPLTPAK1", then holds records back to back:
//   "SFR1" | share id (32) | blob size (u32 LE) | CRC-32C (u32 LE) over id, size and blob | blob
// Packs are append-only and written by one writer. A record is trusted only through the index: a
// reader checks that magic, id and size match what the index says and that the CRC holds.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "common/bytes.hpp"
#include "common/fd.hpp"

namespace splitfs::store::pack {

inline constexpr std::size_t kFileHeaderSize = 8;
inline constexpr std::array<std::uint8_t, kFileHeaderSize> kFileMagic = {'S', 'P', 'L', 'T',
                                                                         'P', 'A', 'K', '1'};
inline constexpr std::size_t kRecordHeaderSize = 44;
// Pack names have eight decimal digits; number 0 is never used.
inline constexpr std::uint32_t kMaxNumber = 99'999'999;
// Far above the protocol's share bound; keeps a damaged index from asking for a huge allocation.
inline constexpr std::size_t kMaxBlobBytes = 64u << 20;

using RecordHeader = std::array<std::uint8_t, kRecordHeaderSize>;

RecordHeader make_header(const Id& id, ByteView blob);
// True if `header` is a record header for exactly `id` and `blob` (magic, id, size and CRC).
bool check_record(const RecordHeader& header, const Id& id, ByteView blob);

// "00000042.pack" for 42.
std::string file_name(std::uint32_t number);
// The number of a well-formed pack file name, nullopt for anything else.
std::optional<std::uint32_t> parse_file_name(std::string_view name);

using splitfs::Fd;

// What a write leaves in the page cache. `drop_behind` is for bulk bytes (a large file's shares):
// the kernel drops their pages once they are on disk (RWF_DONTCACHE, Linux 6.14), so a stream of
// them reuses a few pages instead of filling memory with fresh ones. On a VM that hands freed
// memory back to its host, touching a fresh page costs more than the copy into it. Where the
// kernel or the filesystem cannot drop behind, the write goes through the cache as usual.
enum class Caching { keep, drop_behind };

// Opens with O_CLOEXEC added; errors carry errno in the system category.
std::error_code open_file(const std::filesystem::path& path, int flags, unsigned mode, Fd& out);
// Writes every byte of `iov` at `offset`, across partial writes and IOV_MAX. Modifies `iov`.
std::error_code write_all(int fd, std::span<iovec> iov, std::uint64_t offset,
                          Caching caching = Caching::keep);
// Reads exactly the bytes of `iov` from `offset`. `short_read` is set when the file ends first.
std::error_code read_all(int fd, std::span<iovec> iov, std::uint64_t offset, bool& short_read);
std::error_code sync_data(int fd);
// Makes the names in `dir` durable (after creating or renaming a file in it).
std::error_code sync_dir(const std::filesystem::path& dir);
// Creates `dir` with mode 0700 if it does not exist (its parent must exist).
std::error_code make_private_dir(const std::filesystem::path& dir);

}  // namespace splitfs::store::pack
