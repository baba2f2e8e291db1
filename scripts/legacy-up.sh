#!/usr/bin/env bash
# Starts stand-ins for the problem statement's original servers (tests/doubles/, Python 3 standard
# library only) on free ports, with their files under DIR/https and DIR/tcp, and configures a
# client home in DIR/client for them with 'splitfs init --legacy'.
#
#   scripts/legacy-up.sh DIR     then   export SPLITFS_HOME=DIR/client
#   scripts/local-down.sh DIR    stops them
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
dir=$(realpath -m "$1")
mkdir -p "$dir"

# start NAME SCRIPT: runs the double in the background and waits for its listening line.
start() {
  local name=$1 script=$2 log="$dir/$1.log"
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "$name server already running (pid $(cat "$dir/$name.pid"))" >&2
    exit 1
  fi
  : >"$log"
  python3 "$root/tests/doubles/$script" --data "$dir/$name" --port 0 >"$log" 2>&1 &
  echo $! >"$dir/$name.pid"
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$log"; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
      echo "$name server failed to start:" >&2
      cat "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "$name server did not report listening within 20 s; see $log" >&2
  exit 1
}

address() { grep -m1 '^listening on ' "$dir/$1.log" | awk '{print $3}'; }

start https legacy_http_server.py
start tcp legacy_tcp_server.py
"$bin/splitfs" --home "$dir/client" init --force --legacy \
  --https "http://$(address https)" --tcp "$(address tcp)" >"$dir/init.log" 2>"$dir/init.warning"

echo "HTTP server (original protocol): $(address https)" >&2
echo "TCP server (original protocol):  $(address tcp)" >&2
echo "export SPLITFS_HOME=$dir/client"
