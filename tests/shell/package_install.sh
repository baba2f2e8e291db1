#!/usr/bin/env bash
# The installed package as another project uses it: `cmake --install` into a temporary prefix,
# which is then moved (the package must not depend on where it was installed), outside projects
# (C++ and C) built against it with find_package(splitfs) and with pkg-config, the examples built
# the same way, and everything run against real servers started from the installed binaries.
# Also checks the installed headers, man pages and documentation.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
build=$(dirname "$bin")
work=$(mktemp -d /tmp/splitfs-package.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers" 2>/dev/null || true; rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

echo "== cmake --install into a temporary prefix, then moved"
cmake --install "$build" --prefix "$work/staging" >"$work/install.log"
mv "$work/staging" "$work/prefix"
prefix=$work/prefix
for f in bin/splitfs bin/splitfs-https-server bin/splitfs-tcp-server sbin/mount.fuse.splitfs \
  lib/libsplitfs.so include/splitfs/client.hpp include/splitfs/errors.hpp include/splitfs/splitfs.h \
  lib/pkgconfig/splitfs.pc lib/cmake/splitfs/splitfsConfig.cmake \
  lib/cmake/splitfs/splitfsConfigVersion.cmake share/doc/splitfs/README.md \
  share/doc/splitfs/protocol.md share/doc/splitfs/storage.md share/doc/splitfs/operations.md \
  share/doc/splitfs/api.md share/doc/splitfs/systemd/splitfs-https-server.service \
  share/doc/splitfs/systemd/splitfs-tcp-server.service; do
  [ -e "$prefix/$f" ] || fail "$f is not installed"
done
# The units name the binaries under the prefix given at install time.
grep -q "^ExecStart=$work/staging/bin/splitfs-https-server " \
  "$prefix/share/doc/splitfs/systemd/splitfs-https-server.service" ||
  fail "the HTTPS unit does not start the installed server"

echo "== man pages: valid roff, every subcommand of --help described"
for page in splitfs splitfs-https-server splitfs-tcp-server; do
  file=$prefix/share/man/man1/$page.1
  [ -s "$file" ] || fail "no man page for $page"
  warnings=$(groff -man -Tutf8 -ww -z "$file" 2>&1)
  [ -z "$warnings" ] || fail "groff warns about $page.1: $warnings"
  subcommands=$("$prefix/bin/$page" --help | sed -n '/^Subcommands:/,/^$/p' | awk 'NR > 1 && NF {print $1}')
  [ -n "$subcommands" ] || fail "$page --help lists no subcommands"
  for sub in $subcommands; do
    grep -q "^\.SS \"${page//-/\\\\-} $sub\"" "$file" || fail "$page.1 does not describe '$sub'"
  done
done
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
MANWIDTH=80 man -l "$prefix/share/man/man1/splitfs.1" 2>/dev/null | grep -c "EXIT STATUS" >/dev/null ||
  fail "man cannot render splitfs.1"

echo "== the installed headers stand alone (C99, C++20), warnings as errors"
printf '#include <splitfs/splitfs.h>\nint main(void) { return SPLITFS_OK; }\n' >"$work/header.c"
gcc -std=c99 -Wall -Wextra -Wpedantic -Werror -I"$prefix/include" -c "$work/header.c" \
  -o "$work/header_c.o"
printf '#include <splitfs/client.hpp>\nint main() { return 0; }\n' >"$work/header.cpp"
g++ -std=c++20 -Wall -Wextra -Wpedantic -Werror -I"$prefix/include" -c "$work/header.cpp" \
  -o "$work/header_cpp.o"

echo "== an outside project"
mkdir -p "$work/project"
cat >"$work/project/consumer.cpp" <<'EOF'
// Stores a file, lists it, fetches it into a folder and reads a range, through the C++ API.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <splitfs/client.hpp>
#include <string>

static std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: consumer FILE NAME DEST_DIR\n");
    return 2;
  }
  try {
    splitfs::Client client;
    client.store(argv[1], argv[2]);
    bool listed = false;
    for (const auto& e : client.list())
      listed = listed || e.name == argv[2];
    const auto fetched = client.fetch(argv[2], argv[3]);
    const auto part = client.read(argv[2], 1000, 100);
    const std::string original = slurp(argv[1]);
    if (!listed || slurp(fetched) != original ||
        std::string(part.begin(), part.end()) != original.substr(1000, 100)) {
      std::fprintf(stderr, "consumer: the file did not come back intact\n");
      return 1;
    }
    try {
      client.fetch("no such name", argv[3]);
      return 1;
    } catch (const splitfs::NotFound&) {
    }
    std::printf("C++ consumer: %s stored, listed and fetched intact\n", argv[2]);
    return 0;
  } catch (const splitfs::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
}
EOF
cat >"$work/project/consumer.c" <<'EOF'
/* Stores a file and fetches it into the current folder through the C API; a missing name must be
 * SPLITFS_NOT_FOUND with a message. */
#include <splitfs/splitfs.h>
#include <stdio.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: consumer_c FILE BASENAME\n");
    return 2;
  }
  if (split_store(argv[1]) != SPLITFS_OK || split_fetch(argv[2]) != SPLITFS_OK) {
    fprintf(stderr, "consumer_c: %s\n", splitfs_last_error());
    return 1;
  }
  if (split_fetch("no such name") != SPLITFS_NOT_FOUND || splitfs_last_error()[0] == '\0') {
    fprintf(stderr, "consumer_c: a missing name was not reported as such\n");
    return 1;
  }
  printf("C consumer: %s stored and fetched\n", argv[2]);
  return 0;
}
EOF
cat >"$work/project/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.16)
project(splitfs_consumer C CXX)
find_package(splitfs 0.1 REQUIRED)
add_executable(consumer consumer.cpp)
target_link_libraries(consumer PRIVATE splitfs::splitfs)
add_executable(consumer_c consumer.c)
target_link_libraries(consumer_c PRIVATE splitfs::splitfs)
# The repository's examples build outside it as they are.
add_executable(split_example "$root/examples/example.cpp")
target_link_libraries(split_example PRIVATE splitfs::splitfs)
add_executable(split_c_example "$root/examples/example.c")
target_link_libraries(split_c_example PRIVATE splitfs::splitfs)
add_executable(split_c_batch "$root/examples/batch.c")
target_link_libraries(split_c_batch PRIVATE splitfs::splitfs)
EOF
# A C-only project: the package must not need a C++ compiler there.
mkdir -p "$work/project_c"
cp "$work/project/consumer.c" "$work/project_c/"
cat >"$work/project_c/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(splitfs_c_consumer C)
find_package(splitfs 0.1 REQUIRED)
add_executable(consumer_c consumer.c)
target_link_libraries(consumer_c PRIVATE splitfs::splitfs)
EOF

echo "== built with find_package(splitfs)"
for project in project project_c; do
  cmake -S "$work/$project" -B "$work/$project/build" -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_BUILD_TYPE=Release >"$work/$project.configure.log" 2>&1 ||
    { cat "$work/$project.configure.log" >&2; fail "configuring $project"; }
  cmake --build "$work/$project/build" >"$work/$project.build.log" 2>&1 ||
    { cat "$work/$project.build.log" >&2; fail "building $project"; }
done
grep -q "$prefix/lib/libsplitfs.so" "$work/project.build.log" "$work/project/build/build.ninja" \
  "$work/project/build/CMakeFiles/consumer.dir/link.txt" 2>/dev/null ||
  fail "the project did not link the installed libsplitfs.so"

echo "== built with pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion splitfs)" = "$(sed -n 's/^Version: //p' "$prefix/lib/pkgconfig/splitfs.pc")" ]
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
g++ -std=c++20 "$work/project/consumer.cpp" -o "$work/pc_consumer" $(pkg-config --cflags --libs splitfs) \
  -Wl,-rpath,"$prefix/lib"
# shellcheck disable=SC2046
gcc -std=c99 "$work/project/consumer.c" -o "$work/pc_consumer_c" $(pkg-config --cflags --libs splitfs) \
  -Wl,-rpath,"$prefix/lib"
ldd "$work/pc_consumer_c" | grep -c "$prefix/lib/libsplitfs.so" >/dev/null || fail "pkg-config build links elsewhere"

echo "== run against real servers started from the installed binaries"
eval "$(SPLITFS_BIN_DIR=$prefix/bin "$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
head -c $((300 * 1024 + 17)) /dev/urandom >"$work/data.bin"
mkdir -p "$work/out" "$work/run_c" "$work/run_pc_c" "$work/run_batch"
"$work/project/build/consumer" "$work/data.bin" cmake/data.bin "$work/out"
"$work/pc_consumer" "$work/data.bin" pkg-config/data.bin "$work/out"
cp "$work/data.bin" "$work/c-data.bin"
(cd "$work/run_c" && "$work/project/build/consumer_c" "$work/c-data.bin" c-data.bin)
cmp "$work/c-data.bin" "$work/run_c/c-data.bin"
(cd "$work/run_pc_c" && "$work/project_c/build/consumer_c" "$work/c-data.bin" c-data.bin &&
  "$work/pc_consumer_c" "$work/c-data.bin" c-data.bin)
cmp "$work/c-data.bin" "$work/run_pc_c/c-data.bin"
"$work/project/build/split_example" "$work/data.bin" | grep -c "byte-for-byte identical" >/dev/null
(cd "$work/run_c" && "$work/project/build/split_c_example" "$work/data.bin")

echo "== the second C example: several files, and a failure it explains"
printf 'first\n' >"$work/one.txt"
printf 'second\n' >"$work/two.txt"
"$work/project/build/split_c_batch" store "$work/one.txt" "$work/two.txt"
status=0
(cd "$work/run_batch" && "$work/project/build/split_c_batch" fetch one.txt missing.txt two.txt) \
  2>"$work/batch.err" || status=$?
[ "$status" -eq 1 ] || fail "split_c_batch: exit status $status for a missing name, not 1"
grep -q "splitfs ls" "$work/batch.err" || fail "split_c_batch gave no advice: $(cat "$work/batch.err")"
cmp "$work/one.txt" "$work/run_batch/one.txt"
cmp "$work/two.txt" "$work/run_batch/two.txt"
"$prefix/bin/splitfs" ls | grep -c "cmake/data.bin" >/dev/null || fail "the installed CLI does not list the files"
echo "package install passed"
