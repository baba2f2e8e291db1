#!/usr/bin/env bash
# The storage figures of issue 6, measured through the CLI against real local servers, for each
# segment size given: bytes on disk (both servers, measured with du after a clean stop, so the
# index's write-ahead log is folded in) for a large random file, the same file stored again under
# another name, 100 scattered 1-byte edits, 16 MiB appended, and what is left after deleting
# everything and compacting; store and fetch throughput of the random file; and a text corpus
# (every file under a folder, concatenated) against `zstd -3` of the same bytes.
#
#   bench/storage_figures.sh [--mib N] [--segments "64 128 256 512"] [--text-dir DIR]
#
# Defaults: 1024 MiB, the four segment sizes above (KiB), /usr/include. Needs about 4x the file
# size free under $TMPDIR (default /tmp).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
mib=1024
segments="64 128 256 512"
text_dir=/usr/include
while [ $# -gt 0 ]; do
  case $1 in
    --mib) mib=$2; shift 2 ;;
    --segments) segments=$2; shift 2 ;;
    --text-dir) text_dir=$2; shift 2 ;;
    *) echo "usage: $0 [--mib N] [--segments \"64 128 ...\"] [--text-dir DIR]" >&2; exit 2 ;;
  esac
done
export SPLITFS_BIN_DIR=$bin

work=$(mktemp -d "${TMPDIR:-/tmp}/splitfs-storage-bench.XXXXXX")
servers=$work/servers
cleanup() {
  "$root/scripts/local-down.sh" "$servers" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bytes=$((mib * 1024 * 1024))
now() { date +%s.%N; }
disk() { du -sb "$servers/https/store" "$servers/tcp/store" | awk '{ s += $1 } END { print s }'; }
segment_bytes=
# (Re)starts both servers and points the client at them, with $segment_bytes if set.
up() {
  eval "$("$root/scripts/local-up.sh" "$servers" 2>/dev/null)"
  if [ -n "$segment_bytes" ]; then
    sed -i "s/^segment_bytes = .*/segment_bytes = $segment_bytes/" "$SPLITFS_HOME/config.toml"
  fi
}
down() { "$root/scripts/local-down.sh" "$servers" >/dev/null; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f%%", 100 * a / b }'; }
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
cli() { "$bin/splitfs" "$@" >/dev/null; }

echo "generating $mib MiB of random data and the edited and appended versions..." >&2
head -c "$bytes" /dev/urandom >"$work/base.bin"
cp "$work/base.bin" "$work/edited.bin"
# 100 scattered 1-byte edits in place, at offsets spread over the file.
for i in $(seq 0 99); do
  offset=$(((bytes / 100) * i + (i * 7919) % (bytes / 100)))
  printf '\x5a' | dd of="$work/edited.bin" bs=1 seek="$offset" conv=notrunc status=none
done
cp "$work/edited.bin" "$work/appended.bin"
head -c $((16 * 1024 * 1024)) /dev/urandom >>"$work/appended.bin"

printf '\n%-8s %11s %11s %14s %13s %12s %16s %17s\n' "segment" "store MB/s" "fetch MB/s" \
  "random disk/x" "same again" "100 edits" "+16 MiB: extra" "left after rm+gc"
for kib in $segments; do
  rm -rf "$servers"
  segment_bytes=$((kib * 1024))
  up
  t0=$(now)
  cli store "$work/base.bin" --as big.bin
  t1=$(now)
  cli fetch big.bin -o "$work/fetched.bin"
  t2=$(now)
  cmp "$work/base.bin" "$work/fetched.bin"
  rm -f "$work/fetched.bin"
  down
  d_random=$(disk)
  up
  cli store "$work/base.bin" --as copy.bin
  down
  d_copy=$(disk)
  up
  cli store "$work/edited.bin" --as big.bin
  down
  d_edit=$(disk)
  up
  cli store "$work/appended.bin" --as big.bin
  down
  d_append=$(disk)
  peak=$d_append
  up
  cli rm big.bin copy.bin
  "$bin/splitfs-https-server" --data "$servers/https" compact --grace 0 >/dev/null
  "$bin/splitfs-tcp-server" --data "$servers/tcp" compact --grace 0 >/dev/null
  down
  d_left=$(disk)
  store_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  fetch_s=$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')
  extra=$((d_append - d_edit - 16 * 1024 * 1024))
  printf '%-8s %11s %11s %14s %13s %12s %16s %17s\n' "$kib KiB" "$(rate "$store_s")" \
    "$(rate "$fetch_s")" "$(ratio "$d_random" "$bytes")" \
    "$(percent $((d_copy - d_random)) "$bytes")" "$(percent $((d_edit - d_copy)) "$bytes")" \
    "$(percent "$extra" "$bytes")" "$(percent "$d_left" "$peak")"
done
cat <<EOF

targets: random disk/x <= 1.02; same again <= 0.5%; 100 edits <= 1%; +16 MiB: extra <= 0.2%
(beyond the 16 MiB); left after rm+gc <= 1% of the peak. Percentages are of the $mib MiB file.
EOF

echo "concatenating every file under $text_dir..." >&2
find "$text_dir" -type f -print0 | sort -z | xargs -0 cat >"$work/text.txt" 2>/dev/null || true
text_bytes=$(stat -c %s "$work/text.txt")
zstd_bytes=$(zstd -3 -q -c "$work/text.txt" | wc -c)
rm -rf "$servers"
segment_bytes=
up
t0=$(now)
cli store "$work/text.txt" --as text.txt
t1=$(now)
down
d_text=$(disk)
text_rate=$(awk -v b="$text_bytes" -v a="$t0" -v c="$t1" 'BEGIN { printf "%.0f", b / (c - a) / 1e6 }')
cat <<EOF

text: $text_dir concatenated, $text_bytes bytes; zstd -3 of it: $zstd_bytes bytes
  on disk (both servers): $d_text bytes = $(ratio "$d_text" "$zstd_bytes") x zstd -3 (target <= 1.2)
  = $(ratio "$text_bytes" "$d_text") x smaller than the text; stored at $text_rate MB/s
EOF
