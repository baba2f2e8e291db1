#!/usr/bin/env bash
# The problem statement's scenario, end to end, on this machine: start both servers, store a file,
# list it, show where its chunks went, fetch it back, compare, and stop the servers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
demo=$root/.demo
rm -rf "$demo"
mkdir -p "$demo/files" "$demo/back"
trap '"$root/scripts/local-down.sh" "$demo"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "starting the HTTPS and TCP servers"
eval "$("$root/scripts/local-up.sh" "$demo")"

step "making two files: a text and 3 MiB + 5 bytes of random data"
printf 'splitfs keeps this text split across two servers.\n%.0s' $(seq 1 200) >"$demo/files/notes.txt"
head -c $((3 * 1024 * 1024 + 5)) /dev/urandom >"$demo/files/random.bin"
ls -l "$demo/files"

step "splitfs store"
"$bin/splitfs" store "$demo/files/notes.txt" "$demo/files/random.bin"

step "splitfs ls"
"$bin/splitfs" ls

step "splitfs stat: where the chunks went (odd chunks to HTTPS, even chunks to TCP)"
"$bin/splitfs" stat notes.txt

step "the servers hold ciphertext only: no stored text and no name in their data"
if grep -rqa "splitfs keeps this text" "$demo/https" "$demo/tcp" || grep -rqa "notes.txt" "$demo/https" "$demo/tcp"; then
  echo "FOUND plaintext on a server" >&2
  exit 1
fi
echo "no plaintext found under $demo/https or $demo/tcp"

step "splitfs fetch, and compare"
"$bin/splitfs" fetch notes.txt random.bin -o "$demo/back"
cmp "$demo/files/notes.txt" "$demo/back/notes.txt"
cmp "$demo/files/random.bin" "$demo/back/random.bin"
echo "both files are byte-for-byte identical"

step "the example program: split_store and split_fetch"
"$bin/split_example" "$demo/files/random.bin"

step "stopping the servers"
"$root/scripts/local-down.sh" "$demo"
trap - EXIT
echo "demo passed"
