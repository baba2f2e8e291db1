// The problem statement's scenario: store a file with split_store, fetch it back with split_fetch
// and check that the bytes are the same.
//
//   split_example FILE
//
// Uses the client home in $SPLITFS_HOME (see scripts/local-up.sh). The file is stored under its
// base name and fetched into a fresh folder, then compared with the original.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <splitfs/client.hpp>

namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: split_example FILE\n";
    return 2;
  }
  const fs::path file = fs::absolute(argv[1]);
  const fs::path back_dir =
      fs::temp_directory_path() / ("split_example." + std::to_string(::getpid()));
  try {
    splitfs::split_store(file);
    std::cout << "split_store(" << file.string() << "): " << fs::file_size(file)
              << " bytes in 1024-byte chunks, odd chunks to the HTTPS server, even to TCP\n";

    fs::create_directories(back_dir);
    const fs::path previous = fs::current_path();
    fs::current_path(back_dir);
    splitfs::split_fetch(file.filename().string());
    fs::current_path(previous);
    const fs::path fetched = back_dir / file.filename();
    std::cout << "split_fetch(" << file.filename().string() << "): rebuilt " << fetched.string()
              << "\n";

    const bool same = slurp(file) == slurp(fetched);
    std::cout << (same ? "the fetched file is byte-for-byte identical\n"
                       : "MISMATCH: the fetched file differs\n");
    fs::remove_all(back_dir);
    return same ? 0 : 1;
  } catch (const splitfs::Error& e) {
    std::cerr << "split_example: " << e.what() << "\n";
    fs::remove_all(back_dir);
    return 1;
  }
}
