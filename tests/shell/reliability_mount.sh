#!/usr/bin/env bash
# The mount's durable write-back as a user meets it, with the CLI and a daemonized mount: the TCP
# server is killed, files are copied in (every cp succeeds), `splitfs status` shows the server
# down and the uploads pending, `splitfs umount` gives up after its bounded wait with exit code 5
# and says where the files are kept; a mount killed with SIGKILL loses nothing either; once the
# server is back, the next mount uploads everything and the files come back byte for byte with
# `splitfs fetch`. The mount is always taken down, even when a check fails.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-reliability.XXXXXX)
mnt=$work/mnt
cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null || true
  fi
  "$root/scripts/local-down.sh" "$work/servers" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() {
  echo "FAIL: $*" >&2
  [ -f "$SPLITFS_HOME/mount.log" ] && tail -20 "$SPLITFS_HOME/mount.log" >&2
  exit 1
}
stat_of() { sed -n "s/^$1: //p" "$mnt/.splitfs/stats"; }
tcp_port=$(sed -n 's/^listening on [^ ]*:\([0-9]*\) .*/\1/p' "$work/servers/tcp.log")
start_tcp() {
  "$bin/splitfs-tcp-server" --data "$work/servers/tcp" --port "$tcp_port" \
    >"$work/servers/tcp.log" 2>&1 &
  echo $! >"$work/servers/tcp.pid"
  disown
  for _ in $(seq 1 100); do
    grep -q '^listening on ' "$work/servers/tcp.log" && return 0
    sleep 0.1
  done
  fail "the TCP server did not come back"
}
stop_tcp() {
  kill -9 "$(cat "$work/servers/tcp.pid")"
  while kill -0 "$(cat "$work/servers/tcp.pid")" 2>/dev/null; do sleep 0.05; done
}

mkdir -p "$mnt" "$work/in" "$work/out"
for i in $(seq 1 8); do
  head -c $((i * 37001)) /dev/urandom >"$work/in/a$i"
  head -c $((i * 1000 + 1)) /dev/urandom >"$work/in/b$i"
done

# 1. A clean unmount while the TCP server is down: bounded, exit code 5, files kept.
splitfs mount "$mnt" -o unmount_wait=2
stop_tcp
for i in $(seq 1 8); do
  cp "$work/in/a$i" "$mnt/" || fail "cp a$i while the TCP server is down"
done
cmp "$work/in/a3" "$mnt/a3" || fail "the mount does not show a3's new content"
[ "$(stat_of uploads_pending)" = 8 ] || fail "uploads_pending is $(stat_of uploads_pending)"
set +e
status=$(splitfs status)
status_code=$?
set -e
[ $status_code = 5 ] || fail "splitfs status exit code $status_code with a server down"
grep -q "TCP .*UNREACHABLE" <<<"$status" || fail "status does not show the TCP server down: $status"
grep -q "uploads pending: 8 file(s)" <<<"$status" || fail "status does not show 8 uploads: $status"
json=$(splitfs status --json || true)
grep -q '"reachable":false' <<<"$json" || fail "status --json: $json"
grep -q '"uploads_pending":8' <<<"$json" || fail "status --json: $json"
set +e
message=$(splitfs umount "$mnt" 2>&1)
code=$?
set -e
[ $code = 5 ] || fail "umount exit code $code, expected 5: $message"
grep -q "8 file(s) .* kept in $SPLITFS_HOME/writeback/" <<<"$message" || fail "umount said: $message"
mountpoint -q "$mnt" && fail "still mounted"
echo "umount with the TCP server down: exit 5, $message"

# 2. A mount killed with SIGKILL while more files wait.
start_tcp
splitfs mount "$mnt"
for _ in $(seq 1 100); do
  [ "$(stat_of uploads_pending)" = 0 ] && break
  sleep 0.05
done
[ "$(stat_of uploads_pending)" = 0 ] || fail "the first 8 files were not uploaded"
stop_tcp
for i in $(seq 1 8); do
  cp "$work/in/b$i" "$mnt/" || fail "cp b$i while the TCP server is down"
done
kill -9 "$(stat_of pid)"
sleep 0.2
fusermount3 -uz "$mnt"
start_tcp
back=$(date +%s.%N)
splitfs mount "$mnt"
for _ in $(seq 1 200); do
  [ "$(stat_of uploads_pending)" = 0 ] && [ "$(stat_of tree_pending)" = 0 ] && break
  sleep 0.02
done
stored=$(date +%s.%N)
[ "$(stat_of uploads_pending)" = 0 ] || fail "the journal of the killed mount was not uploaded"
echo "after kill -9: all on both servers $(echo "$stored - $back" | bc) s after the server's return"
splitfs umount "$mnt" || fail "umount with everything stored"

# 3. Everything on the servers, read back without a mount.
for i in $(seq 1 8); do
  splitfs fetch "/a$i" -o "$work/out/" >/dev/null || fail "fetch a$i"
  splitfs fetch "/b$i" -o "$work/out/" >/dev/null || fail "fetch b$i"
  cmp "$work/in/a$i" "$work/out/a$i" || fail "a$i differs"
  cmp "$work/in/b$i" "$work/out/b$i" || fail "b$i differs"
done
left=$(find "$SPLITFS_HOME/writeback" -name 'f-*.rec' | wc -l)
[ "$left" = 0 ] || fail "$left journal records left"
echo "16 files byte-identical from the servers; journal empty"
