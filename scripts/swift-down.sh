#!/usr/bin/env bash
# Stops the Swift that scripts/swift-up.sh started in DIR: SIGTERM to each recorded PID and its
# process group (Swift's servers call setsid(), so each leads its own group of workers), SIGKILL
# after 10 s. The data stays in DIR; remove it with rm -r.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$(realpath -m "$1")
[ -f "$dir/pids" ] || exit 0
mapfile -t pids <"$dir/pids"
for pid in "${pids[@]}"; do
  [[ $pid =~ ^[0-9]+$ ]] || continue
  kill -TERM -- "-$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
done
for _ in $(seq 1 100); do
  alive=0
  for pid in "${pids[@]}"; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if kill -0 "$pid" 2>/dev/null; then alive=1; fi
  done
  [ $alive -eq 0 ] && break
  sleep 0.1
done
for pid in "${pids[@]}"; do
  [[ $pid =~ ^[0-9]+$ ]] || continue
  kill -KILL -- "-$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
done
rm -f "$dir/pids"
