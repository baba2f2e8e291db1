#!/usr/bin/env bash
# What the malware check costs on one large file: `splitfs scan` throughput and peak memory with
# the built-in heuristics and the bundled YARA rules, then with ClamAV added (a small signature
# database written here: the official ones cannot be downloaded everywhere; with them ClamAV's
# load time comes on top), for random data and for a zip of text; then `splitfs store` of the
# random file against real local servers with the check and with --no-scan.
#
#   bench/scan_throughput.sh [SIZE_MIB]     (default 1024)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
mib=${1:-1024}
work=$(mktemp -d /tmp/splitfs-scanbench.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers" 2>/dev/null; rm -rf "$work"' EXIT
bytes=$((mib * 1024 * 1024))

head -c "$bytes" /dev/urandom >"$work/random.bin"
head -c "$bytes" /dev/urandom >"$work/random2.bin"  # stored once each: no deduplication
# Text compresses about 5x: the archive walk decompresses all of it.
python3 - "$work/text.zip" "$bytes" <<'EOF'
import sys, zipfile
path, size = sys.argv[1], int(sys.argv[2])
line = b"2024-05-01 12:00:00 INFO request served in 12 ms from cache node %d\n"
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
    with z.open("server.log", "w", force_zip64=True) as f:
        written, i = 0, 0
        while written < size:
            chunk = b"".join(line % (i + k) for k in range(4096))
            f.write(chunk)
            written += len(chunk)
            i += 4096
EOF
text_bytes=$(python3 -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).infolist()[0].file_size)' "$work/text.zip")

mkdir -p "$work/plain" "$work/clamav" "$work/withclam"
printf '[scan]\nclamav_database = ""\n' >"$work/plain/config.toml"
echo "44d88612fea8a8f36de82e1278abb02f:68:Bench.Test.Hash" >"$work/clamav/bench.hdb"
echo "Bench.Test.Pattern:0:*:$(printf 'splitfs-bench-pattern' | od -An -tx1 | tr -d ' \n')" \
  >"$work/clamav/bench.ndb"
# ClamAV skips files over scan.clamav_max_bytes (default 100 MiB): here it reads everything.
printf '[scan]\nclamav_database = "%s"\nclamav_max_bytes = 2147483647\n' "$work/clamav" \
  >"$work/withclam/config.toml"

now() { date +%s.%N; }
# run LABEL FILE BYTES HOME: one scan, its throughput (of the file's own size, and of what was
# looked at) and peak memory.
run() {
  local label=$1 file=$2 size=$3 home=$4 t0 t1
  t0=$(now)
  /usr/bin/time -f '%M' -o "$work/rss" "$bin/splitfs" --home "$home" scan "$file" \
    >"$work/verdict" 2>/dev/null || true
  t1=$(now)
  grep -q ": clean$" "$work/verdict" || {
    echo "unexpected verdict: $(cat "$work/verdict")" >&2
    exit 1
  }
  awk -v b="$size" -v a="$t0" -v c="$t1" -v rss="$(cat "$work/rss")" -v l="$label" \
    'BEGIN { s = c - a; printf "%-44s %8.0f MB/s  %6.2f s  peak memory %4.0f MiB\n", l, b / s / 1e6, s, rss / 1024 }'
}

echo "file: $mib MiB of random data; a zip of $((text_bytes >> 20)) MiB of text ($(($(stat -c %s "$work/text.zip") >> 20)) MiB zipped)"
echo "command: splitfs scan FILE"
run "random, heuristics + YARA" "$work/random.bin" "$bytes" "$work/plain"
run "random, heuristics + YARA + ClamAV" "$work/random.bin" "$bytes" "$work/withclam"
run "zip of text, heuristics + YARA (unzipped bytes)" "$work/text.zip" "$text_bytes" "$work/plain"
run "zip of text, + ClamAV (unzipped bytes)" "$work/text.zip" "$text_bytes" "$work/withclam"

eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
store() {
  local label=$1 file=$2 t0 t1
  shift 2
  t0=$(now)
  "$bin/splitfs" store "$@" "$file" >/dev/null 2>&1
  t1=$(now)
  awk -v b="$bytes" -v a="$t0" -v c="$t1" -v l="$label" \
    'BEGIN { s = c - a; printf "%-44s %8.0f MB/s  %6.2f s\n", l, b / s / 1e6, s }'
}
echo "command: splitfs store FILE (local servers; two random files of that size)"
store "store, with the check (heuristics + YARA)" "$work/random.bin"
store "store --no-scan" "$work/random2.bin" --no-scan
