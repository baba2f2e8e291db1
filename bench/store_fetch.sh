#!/usr/bin/env bash
# Store and fetch throughput of one large random file through the CLI against real local servers,
# and the bytes each server keeps on disk.
#
#   bench/store_fetch.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
mib=${1:-1024}
work=$(mktemp -d /tmp/splitfs-bench.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"

head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/input.bin"
bytes=$((mib * 1024 * 1024))

now() { date +%s.%N; }
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f MB/s (%.2f s)", b / s / 1e6, s }'; }

t0=$(now)
"$bin/splitfs" store "$work/input.bin" --as bench.bin >/dev/null
t1=$(now)
"$bin/splitfs" fetch bench.bin -o "$work/output.bin" >/dev/null
t2=$(now)
cmp "$work/input.bin" "$work/output.bin"

store_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
fetch_s=$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')
echo "file:  $mib MiB of random data ($bytes bytes)"
echo "store: $(rate "$store_s")"
echo "fetch: $(rate "$fetch_s")"
for server in https tcp; do
  echo "on disk, $server server: $(du -sb "$work/servers/$server/store" | cut -f1) bytes"
done
