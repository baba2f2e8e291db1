#!/usr/bin/env bash
# Stops the PostgreSQL cluster that scripts/pg-up.sh started in DIR: SIGINT to the postmaster's
# PID (a fast shutdown: clients are disconnected), SIGKILL after 10 s. The data stays in DIR;
# remove it with rm -r.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$(realpath -m "$1")
pidfile="$dir/data/postmaster.pid"
[ -f "$pidfile" ] || exit 0
pid=$(head -n 1 "$pidfile")
[[ $pid =~ ^[0-9]+$ ]] || exit 0
kill -INT "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || exit 0
  sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || true
