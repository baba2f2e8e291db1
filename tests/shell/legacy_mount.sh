#!/usr/bin/env bash
# The mount over stand-ins for the problem statement's original servers (scripts/legacy-up.sh):
# cp files at the chunk boundaries in, ls -l, cmp, unmount, remount and check again, fetch with the
# CLI, placement by the chunk rule, no plaintext or name in either server's folder.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-legacy-mount.XXXXXX)
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
eval "$("$root/scripts/legacy-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() {
  echo "FAIL: $*" >&2
  [ -f "$SPLITFS_HOME/mount.log" ] && tail -20 "$SPLITFS_HOME/mount.log" >&2
  exit 1
}

mkdir -p "$mnt" "$work/in" "$work/out"
sizes=(0 1 1023 1024 1025 2049 $((1024 * 1024 + 7)))
for size in "${sizes[@]}"; do
  head -c "$size" /dev/urandom >"$work/in/f$size"
done

check_all() {
  local when=$1 listing
  listing=$(ls -l "$mnt")
  for size in "${sizes[@]}"; do
    grep -qE "^-rw-r--r-- 1 .* $size .* f$size\$" <<<"$listing" || fail "$when: ls -l lacks f$size: $listing"
    cmp "$work/in/f$size" "$mnt/f$size" || fail "$when: content of f$size"
  done
  echo "$when: ${#sizes[@]} files with the right sizes and bytes"
}

splitfs mount "$mnt"
mountpoint -q "$mnt" || fail "not mounted"
for size in "${sizes[@]}"; do
  cp "$work/in/f$size" "$mnt/"
done
chmod 644 "$mnt"/f*
mkdir "$mnt/docs"
printf 'a secret sentence that must never reach a server\n' >"$mnt/docs/secret.txt"
check_all "written"

splitfs umount "$mnt"
mountpoint -q "$mnt" && fail "still mounted after umount"
splitfs mount "$mnt"
check_all "after remount"
grep -q "a secret sentence" "$mnt/docs/secret.txt" || fail "docs/secret.txt after remount"

for size in "${sizes[@]}"; do
  splitfs fetch "f$size" -o "$work/out" >/dev/null
  cmp "$work/in/f$size" "$work/out/f$size" || fail "splitfs fetch of f$size"
done
echo "splitfs fetch reads what the mount wrote"

placement() {
  local name=$1 https=$2 tcp=$3 out
  out=$(splitfs stat "$name")
  grep -qE "^HTTPS .*: $https chunks" <<<"$out" || fail "HTTP placement of $name: $out"
  grep -qE "^TCP .*: $tcp chunks" <<<"$out" || fail "TCP placement of $name: $out"
}
placement f1 1 0
placement f1025 1 1
placement f2049 2 1
placement f$((1024 * 1024 + 7)) 513 512
# The original servers keep each piece small (their TCP server reads with single recv calls).
for side in https tcp; do
  big=$(find "$work/servers/$side" -type f -size +4096c | head -1)
  [ -z "$big" ] || fail "$side holds a piece over 4096 bytes: $big"
done
echo "placement follows the chunk rule on the original servers"

if grep -rqa "a secret sentence" "$work/servers/https" "$work/servers/tcp" ||
  grep -rqa "secret.txt" "$work/servers/https" "$work/servers/tcp"; then
  fail "plaintext or a name on a server"
fi
splitfs umount "$mnt"
mountpoint -q "$mnt" && fail "still mounted at the end"
echo "legacy mount: all checks passed"
