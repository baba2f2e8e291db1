#!/usr/bin/env bash
# Starts both splitfs servers on this machine, on free ports, with their data under DIR, and
# configures a client home in DIR/client pinned to their fingerprints. The client's identity is
# created first and enrolled on both servers as user "local" (or $SPLITFS_USER), so the client is
# admitted with no manual step.
#
#   scripts/local-up.sh DIR      then   export SPLITFS_HOME=DIR/client
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

# start NAME BINARY: runs the server in the background and waits for its listening line.
start() {
  local name=$1 binary=$2 log="$dir/$1.log"
  if [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "$name server already running (pid $(cat "$dir/$name.pid"))" >&2
    exit 1
  fi
  : >"$log"
  "$bin/$binary" --data "$dir/$name" --port 0 >"$log" 2>&1 &
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

# field NAME N: the Nth word of the server's listening line.
field() { grep -m1 '^listening on ' "$dir/$1.log" | awk -v n="$2" '{print $n}'; }

# The client's identity (kept if it exists), enrolled on both servers before they start.
fingerprint=$("$bin/splitfs" --home "$dir/client" id)
for server in https:splitfs-https-server tcp:splitfs-tcp-server; do
  "$bin/${server#*:}" --data "$dir/${server%%:*}" users add "${SPLITFS_USER:-local}" \
    "$fingerprint" >/dev/null
done

start https splitfs-https-server
start tcp splitfs-tcp-server
"$bin/splitfs" --home "$dir/client" init --force \
  --https "$(field https 3)" --https-fingerprint "$(field https 5)" \
  --tcp "$(field tcp 3)" --tcp-fingerprint "$(field tcp 5)" >"$dir/init.log"

echo "HTTPS server: $(field https 3) ($(field https 5))" >&2
echo "TCP server:   $(field tcp 3) ($(field tcp 5))" >&2
echo "export SPLITFS_HOME=$dir/client"
