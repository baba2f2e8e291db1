#!/usr/bin/env bash
# The problem statement's scenario, end to end, on this machine: start both servers, store a file,
# list it, show where its chunks went, fetch it back, compare; then mount the store as a folder,
# cp files in, ls -l, cat them back, compare, show where their chunks went, unmount, and stop
# the servers.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
demo=$root/.demo
rm -rf "$demo"
mkdir -p "$demo/files" "$demo/back"
cleanup() {
  if mountpoint -q "$demo/mnt" 2>/dev/null; then
    "$bin/splitfs" umount "$demo/mnt" 2>/dev/null || fusermount3 -uz "$demo/mnt" 2>/dev/null || true
  fi
  "$root/scripts/local-down.sh" "$demo"
}
trap cleanup EXIT

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

step "splitfs mount: the store as a folder"
mkdir -p "$demo/mnt"
"$bin/splitfs" mount "$demo/mnt"
mount | grep " $demo/mnt "

step "cp files into the mount"
cp "$demo/files/notes.txt" "$demo/files/random.bin" "$demo/mnt/"
mkdir "$demo/mnt/photos"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$demo/files/holiday.jpg"
cp "$demo/files/holiday.jpg" "$demo/mnt/photos/"
ls -l "$demo/mnt" "$demo/mnt/photos"

step "cat them back and compare"
head -3 "$demo/mnt/notes.txt"
cmp "$demo/files/notes.txt" "$demo/mnt/notes.txt"
cmp "$demo/files/random.bin" "$demo/mnt/random.bin"
# shellcheck disable=SC2002 # cat on purpose: read the way a user reads
cat "$demo/mnt/photos/holiday.jpg" | cmp - "$demo/files/holiday.jpg"
echo "all three files read back byte-for-byte identical"

step "splitfs stat: where the chunks of a file written through the mount went"
"$bin/splitfs" stat photos/holiday.jpg

step "splitfs stats: the mount's cache and transfer counters"
"$bin/splitfs" stats "$demo/mnt" | grep -E "^(cache_hits|cache_misses|bytes_sent|bytes_received):"

step "splitfs umount (waits until everything is stored), then the files are still there"
"$bin/splitfs" umount "$demo/mnt"
"$bin/splitfs" fetch photos/holiday.jpg -o "$demo/back/holiday.jpg"
cmp "$demo/files/holiday.jpg" "$demo/back/holiday.jpg"
echo "fetched from the servers without a mount: identical"

step "stopping the servers"
"$root/scripts/local-down.sh" "$demo"
trap - EXIT
echo "demo passed"
