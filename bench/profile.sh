#!/usr/bin/env bash
# Where the time goes when a large file goes into and out of the mount: starts both servers and a
# mount, and records the whole machine with perf (cpu-clock: works without hardware counters)
# during `cp` of a fresh random file into the mount (then fsync) and `cat` of it out on a fresh
# mount, and during `splitfs store` / `splitfs fetch` of another one. Prints, for each, the CPU
# each process used and the top entries of ours; libcrypto is split into AES-GCM and SHA-256 by
# address, measured against `openssl speed` (the library has no symbols).
#
#   bench/profile.sh [SIZE]        (default 512M; needs perf and about 4x SIZE free under /tmp)
#   BENCH_MOUNT_OPTIONS=...        extra -o options for the mount
set -eu  # no pipefail: the report pipelines end early on purpose (head)
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${SPLITFS_BIN_DIR:-$root/build/bin}")
export SPLITFS_BIN_DIR=$bin
bytes=$(numfmt --from=iec "${1:-512M}")
command -v perf >/dev/null || { echo "profile: perf is not installed" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/splitfs-profile.XXXXXX")
mnt=$work/mnt
mkdir -p "$mnt"
cleanup() {
  set +e
  grep -q " $mnt " /proc/self/mounts && "$bin/splitfs" umount "$mnt" >/dev/null 2>&1
  "$root/scripts/local-down.sh" "$work/servers" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
options=()
if [ -n "${BENCH_MOUNT_OPTIONS:-}" ]; then options=(-o "$BENCH_MOUNT_OPTIONS"); fi
head -c "$bytes" /dev/urandom >"$work/a.bin"
head -c "$bytes" /dev/urandom >"$work/b.bin"

# Which libcrypto addresses are AES-GCM and which SHA-256 on this machine (by their 64 KiB regions).
crypto_pages() {
  perf record -q -F 999 -e cpu-clock -o "$work/speed.data" -- \
    openssl speed -seconds 1 -bytes 16384 -evp "$1" >/dev/null 2>&1
  perf report -i "$work/speed.data" --stdio --dso libcrypto.so.3 --sort sym 2>/dev/null |
    awk '$3 ~ /^0x/ { print substr($3, 1, length($3) - 4) }' | sort -u
}
crypto_pages aes-256-gcm >"$work/aes.pages"
crypto_pages sha256 >"$work/sha.pages"

# profile LABEL CMD...: runs CMD under a machine-wide perf record, then reports.
profile() {
  local label=$1
  shift
  perf record -q -a -F 499 -e cpu-clock -o "$work/$label.data" 2>/dev/null &
  local perf_pid=$!
  sleep 0.5
  local t0
  t0=$(date +%s%N)
  "$@"
  local ns=$(($(date +%s%N) - t0))
  kill -INT "$perf_pid"
  wait "$perf_pid" 2>/dev/null || true
  local data=$work/$label.data
  echo
  echo "== $label: $(awk -v b="$bytes" -v ns="$ns" 'BEGIN { printf "%.0f MB/s (%.2f s)", b / ns * 1e3, ns / 1e9 }')," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "-- CPU by process (share of all CPUs over the recording)"
  # The mount's threads carry names of their own (sfs-readahead, sfs-upload, ...).
  perf report -i "$data" --stdio --sort comm 2>/dev/null | grep -v '^#' | grep -v '^$' |
    sed 's/  */ /g' | head -12
  # Entries per process come from a report sorted by comm first: filtering a report sorted by
  # symbol alone (--comm, --pid) counts each symbol's samples of every process under the process
  # that hit it first.
  perf report -i "$data" --stdio --sort comm,dso,sym -g none 2>/dev/null | grep -v '^#' |
    grep -v '^$' >"$data.by-comm"
  # Ours: the mount's threads (splitfs, sfs-readahead, sfs-stage, ...) or the splitfs command.
  local mine='($2 == who || (who == "ours" && ($2 == "splitfs" || $2 ~ /^sfs-/)))'
  for who in ours splitfs-https-s splitfs-tcp-ser; do
    echo "-- $who: top entries"
    awk -v who="$who" "$mine"' {
        p = $1; sub("%", "", p); k = $3; for (i = 4; i <= NF; i++) k = k " " $i
        sum[substr(k, 1, 160)] += p }
      END { for (k in sum) printf "%.2f%% %s\n", sum[k], k }' "$data.by-comm" |
      sort -rn | head -12
    awk -v who="$who" -v aes="$work/aes.pages" -v sha="$work/sha.pages" '
      BEGIN { while ((getline l < aes) > 0) a[l] = 1; while ((getline l < sha) > 0) s[l] = 1 }
      '"$mine"' && $3 == "libcrypto.so.3" && $5 ~ /^0x/ {
        p = $1; sub("%", "", p); k = substr($5, 1, length($5) - 4)
        if (k in a) ta += p; else if (k in s) ts += p; else to += p }
      END { if (ta + ts + to > 0)
              printf "   libcrypto: AES-GCM %.2f%%, SHA-256 %.2f%%, other %.2f%%\n", ta, ts, to }' \
      "$data.by-comm"
  done
}

"$bin/splitfs" mount "$mnt" "${options[@]}"
profile "cp-in" sh -c "cp '$work/a.bin' '$mnt/a.bin' && sync '$mnt/a.bin'"
echo "-- mount counters"
grep -E '^(bytes_sent|shares_sent|shares_skipped|file_commit_us|tree_commit_us|sync_wait_us):' \
  "$mnt/.splitfs/stats"
"$bin/splitfs" umount "$mnt"
"$bin/splitfs" mount "$mnt" "${options[@]}"
profile "cat-out-cold" sh -c "cat '$mnt/a.bin' >/dev/null"
"$bin/splitfs" umount "$mnt"
profile "store" "$bin/splitfs" store "$work/b.bin" --as b.bin
profile "fetch" "$bin/splitfs" fetch b.bin -o "$work/b.out"
cmp "$work/b.bin" "$work/b.out"
