#!/usr/bin/env bash
# Two builds against each other on the large-file paths, alternated round by round so that the
# machine's drift (this VM's speed changes by the hour) falls on both alike. Each round and build:
# fresh servers, a fresh random file, then
#   cp     `cp` into a fresh mount and `sync` of the file (durable on both servers): MB/s;
#   cat    `cat` of it on a fresh mount (cold): MB/s;
#   fetch  `splitfs store` of another file, then `splitfs fetch` of it (the first read, as in
#          bench/run.sh): MB/s of each.
# Each line also gives the CPU ticks (1/100 s) and minor page faults of ours and of each server,
# read from /proc; the end gives each figure's mean per build.
#
#   bench/compare.sh [--rounds N] [--mib M] BIN_DIR_A BIN_DIR_B     (defaults: 3 rounds, 1024 MiB)
#
# Copy a build's build/bin aside (cp -r build/bin /tmp/bin-a) before rebuilding the other.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=3
mib=1024
while [ $# -gt 2 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ]; then
  echo "usage: $0 [--rounds N] [--mib M] BIN_DIR_A BIN_DIR_B" >&2
  exit 2
fi
builds=("$(realpath "$1")" "$(realpath "$2")")
bytes=$((mib * 1024 * 1024))
results=$(mktemp "${TMPDIR:-/tmp}/splitfs-compare.XXXXXX")
work=
mnt=
cleanup() {
  set +e
  if [ -n "$mnt" ] && grep -q " $mnt " /proc/self/mounts; then fusermount3 -u -z "$mnt"; fi
  if [ -n "$work" ]; then
    "$root/scripts/local-down.sh" "$work/servers" >/dev/null 2>&1
    rm -rf "$work"
  fi
}
trap 'cleanup; rm -f "$results"' EXIT

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
faults() { awk '{ print $10 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
mbps() { awk -v b="$bytes" -v a="$1" -v c="$2" 'BEGIN { printf "%.0f", b / (c - a) / 1e6 }'; }

# measure LABEL BUILD OURS_PID CMD...: runs CMD, prints and records its MB/s with the CPU ticks
# and faults each process took meanwhile. OURS_PID 0: ours is CMD itself (its children's usage).
measure() {
  local label=$1 build=$2 ours=$3
  shift 3
  local pids=("$https" "$tcp") t0 t1 before=() after=() i
  [ "$ours" != 0 ] && pids=("$ours" "${pids[@]}")
  for i in "${pids[@]}"; do before+=("$(ticks "$i") $(faults "$i")"); done
  t0=$(now)
  if [ "$ours" = 0 ]; then
    /usr/bin/time -f "%U %S %R" -o "$work/time" "$@" >/dev/null
  else
    "$@" >/dev/null
  fi
  t1=$(now)
  for i in "${pids[@]}"; do after+=("$(ticks "$i") $(faults "$i")"); done
  local line="$label $(mbps "$t0" "$t1") MB/s"
  local names=(https tcp)
  if [ "$ours" = 0 ]; then
    line+=" | ours $(awk '{ printf "%d ticks %d faults", ($1 + $2) * 100, $3 }' "$work/time")"
  else
    names=(ours https tcp)
  fi
  for i in "${!names[@]}"; do
    line+=" | ${names[$i]} $(echo "${before[$i]} ${after[$i]}" |
      awk '{ printf "%d ticks %d faults", $3 - $1, $4 - $2 }')"
  done
  echo "$line"
  echo "$build $label $(mbps "$t0" "$t1")" >>"$results"
}

for round in $(seq "$rounds"); do
  for b in 0 1; do
    build=${builds[$b]}
    name=$([ "$b" = 0 ] && echo A || echo B)
    echo "== round $round, build $name ($build)"
    export SPLITFS_BIN_DIR=$build
    work=$(mktemp -d "${TMPDIR:-/tmp}/splitfs-compare.XXXXXX")
    mnt=$work/mnt
    mkdir -p "$mnt"
    eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
    https=$(cat "$work/servers/https.pid")
    tcp=$(cat "$work/servers/tcp.pid")
    head -c "$bytes" /dev/urandom >"$work/a.bin"
    head -c "$bytes" /dev/urandom >"$work/b.bin"

    "$build/splitfs" mount "$mnt" >/dev/null
    pid=$(awk '/^pid: / { print $2 }' "$mnt/.splitfs/stats")
    measure cp "$name" "$pid" sh -c "cp '$work/a.bin' '$mnt/a.bin' && sync '$mnt/a.bin'"
    "$build/splitfs" umount "$mnt" >/dev/null
    "$build/splitfs" mount "$mnt" >/dev/null
    pid=$(awk '/^pid: / { print $2 }' "$mnt/.splitfs/stats")
    measure cat "$name" "$pid" cat "$mnt/a.bin"
    "$build/splitfs" umount "$mnt" >/dev/null
    measure store "$name" 0 "$build/splitfs" store "$work/b.bin" --as b.bin
    measure fetch "$name" 0 "$build/splitfs" fetch b.bin -o "$work/b.out"
    cmp "$work/b.bin" "$work/b.out"
    cleanup
    work=
    mnt=
  done
done
echo "== means, MB/s"
awk '{ sum[$2 " " $1] += $3; n[$2 " " $1]++ }
     END { for (k in sum) printf "%-6s %s %6.0f\n", substr(k, 1, index(k, " ") - 1),
                                 substr(k, index(k, " ") + 1), sum[k] / n[k] }' "$results" | sort
