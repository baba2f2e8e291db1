#!/usr/bin/env bash
# The example programs (C++ and C) against real servers.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-example.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"

head -c $((2 * 1024 * 1024 + 3)) /dev/urandom >"$work/sample.bin"
"$bin/split_example" "$work/sample.bin" | tee "$work/out"
grep -q "byte-for-byte identical" "$work/out"

mkdir "$work/c" && cp "$work/sample.bin" "$work/c/c-sample.bin"
cd "$work/c"
"$bin/split_c_example" "$work/c/c-sample.bin"
mkdir "$work/c2" && cd "$work/c2"
"$bin/split_c_example" "$work/c/c-sample.bin"
cmp "$work/c/c-sample.bin" "$work/c2/c-sample.bin"
echo "examples passed"
