#!/usr/bin/env bash
# The listing and status commands beside a running mount, as a script reads them: `stats --json`
# and `status --json` show the mount, `ls --json` lists the files it wrote (source "mount") next
# to stored ones, `stat --json` and `verify` read them, `fetch -r` of a stored folder is not
# confused by them. The mount is always taken down, even when a check fails.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-climount.XXXXXX)
mnt=$work/mnt
cleanup() {
  if mountpoint -q "$mnt" 2>/dev/null; then
    "$bin/splitfs" umount "$mnt" --timeout 60 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null ||
      fusermount3 -uz "$mnt" 2>/dev/null || true
  fi
  "$root/scripts/local-down.sh" "$work/servers"
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
expect() {
  local want=$1 code=0
  shift
  "$@" >"$work/out" 2>"$work/err" || code=$?
  [ "$code" -eq "$want" ] || fail "$* exited $code, not $want: $(cat "$work/err")"
}
json() {
  python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$work/out" "$1" || fail "json check '$1' on: $(cat "$work/out")"
}

mkdir -p "$mnt" "$work/docs"
head -c 300000 /dev/urandom >"$work/docs/a.bin"
splitfs store -r "$work/docs" >/dev/null
splitfs mount "$mnt"
mountpoint -q "$mnt" || fail "not mounted"
mkdir "$mnt/docs"
head -c 200000 /dev/urandom >"$work/mounted.bin"
cp "$work/mounted.bin" "$mnt/docs/b.bin"
sync "$mnt/docs/b.bin"

expect 0 splitfs stats "$mnt" --json
json 'isinstance(j["pid"], int) and j["pid"] > 0'
json 'all(isinstance(j[k], int) for k in ("cache_bytes", "uploads_pending", "files_pending"))'
expect 0 splitfs status --json
json 'any(m["mountpoint"] == "'"$mnt"'" and m["pid"] > 0 for m in j["mounts"])'
json 'all(s["reachable"] for s in j["servers"])'
echo "stats --json and status --json show the mount"

# Wait until the mount has stored the file (nothing pending), then read it from the outside.
for _ in $(seq 1 100); do
  expect 0 splitfs stats "$mnt" --json
  python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(j["files_pending"] + j["uploads_pending"])' \
    "$work/out" && break
  sleep 0.2
done
expect 0 splitfs ls --json
json '{e["name"]: e["source"] for e in j} == {"docs/a.bin": "store", "/docs/b.bin": "mount"}'
json '{e["name"]: e["size"] for e in j}["/docs/b.bin"] == 200000'
expect 0 splitfs stat /docs/b.bin --json
json 'j["size"] == 200000 and [s["chunks"] for s in j["servers"]] == [98, 98]'
expect 0 splitfs verify docs/b.bin
grep -q "sha256 $(sha256sum "$work/mounted.bin" | cut -d' ' -f1)\$" "$work/out" ||
  fail "verify of a mount file: $(cat "$work/out")"
expect 0 splitfs fetch -r docs -o "$work/restore"
[ "$(grep -c '^fetched ' "$work/out")" -eq 1 ] || fail "fetch -r docs: $(cat "$work/out")"
cmp "$work/docs/a.bin" "$work/restore/docs/a.bin" || fail "fetch -r of the stored folder"
expect 0 splitfs fetch docs/b.bin -o "$work/b.back"
cmp "$work/mounted.bin" "$work/b.back" || fail "fetch of the mount's file"
echo "ls, stat, verify and fetch read the mount's files by their path"

splitfs umount "$mnt"
mountpoint -q "$mnt" && fail "still mounted after umount"
# The mount process (in the background, since forked) ended cleanly: its journal went with it.
left=$(find "$SPLITFS_HOME/writeback" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
[ "$left" -eq 0 ] || fail "a clean unmount left a journal: $(ls -R "$SPLITFS_HOME/writeback")"
expect 1 splitfs stats "$mnt" --json
echo "cli mount: all checks passed"
