#!/usr/bin/env bash
# The mount as a user uses it, against real servers started by scripts/local-up.sh: cp files at
# the chunk boundaries in, ls -l and cmp them, unmount, remount and check again, fetch a file the
# mount wrote with `splitfs fetch`, and check that its chunks sit on the servers by the chunk
# rule. The mount is always taken down, even when a check fails.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-mount.XXXXXX)
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

mkdir -p "$mnt" "$work/in" "$work/out"
sizes=(0 1 1023 1024 1025 $((1024 * 1024 + 7)) $((64 * 1024 * 1024)))
for size in "${sizes[@]}"; do
  head -c "$size" /dev/urandom >"$work/in/f$size"
done

check_all() {
  local when=$1 listing
  listing=$(ls -l "$mnt")
  for size in "${sizes[@]}"; do
    grep -qE "^-rw-r--r-- 1 .* $size .* f$size\$" <<<"$listing" || fail "$when: ls -l lacks f$size: $listing"
    [ "$(stat -c %s "$mnt/f$size")" = "$size" ] || fail "$when: size of f$size"
    cmp "$work/in/f$size" "$mnt/f$size" || fail "$when: content of f$size"
    # shellcheck disable=SC2002 # cat on purpose: read the way a user reads
    cat "$mnt/f$size" | cmp - "$work/in/f$size" || fail "$when: cat of f$size"
  done
  echo "$when: ${#sizes[@]} files with the right sizes and bytes"
}

splitfs mount "$mnt"
mountpoint -q "$mnt" || fail "not mounted"
for size in "${sizes[@]}"; do
  cp "$work/in/f$size" "$mnt/"
done
chmod 644 "$mnt"/f*
check_all "written"

splitfs umount "$mnt"
mountpoint -q "$mnt" && fail "still mounted after umount"
echo "unmounted"
splitfs mount "$mnt"
check_all "after remount"

# The command line finds files the mount wrote, by path.
for size in "${sizes[@]}"; do
  splitfs fetch "f$size" -o "$work/out" >/dev/null
  cmp "$work/in/f$size" "$work/out/f$size" || fail "splitfs fetch of f$size"
done
mkdir "$mnt/docs"
cp "$work/in/f1025" "$mnt/docs/report.bin"
# A closed file uploads in the background; fsync returns once it is on both servers.
sync "$mnt/docs/report.bin"
splitfs fetch docs/report.bin -o "$work/out/report.bin" >/dev/null
cmp "$work/in/f1025" "$work/out/report.bin" || fail "splitfs fetch docs/report.bin"
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
splitfs ls | grep -cE "^ +1025 +2 chunks .* /docs/report.bin\$" >/dev/null || fail "ls lacks /docs/report.bin"
echo "splitfs fetch and ls see files written through the mount"

# Placement by the chunk rule: chunks 1, 3, 5, ... on HTTPS, 2, 4, 6, ... on TCP.
placement() {
  local name=$1 https=$2 tcp=$3 out
  out=$(splitfs stat "$name")
  grep -qE "^HTTPS .*: $https chunks" <<<"$out" || fail "HTTPS placement of $name: $out"
  grep -qE "^TCP .*: $tcp chunks" <<<"$out" || fail "TCP placement of $name: $out"
}
placement f1 1 0
placement f1023 1 0
placement f1025 1 1
placement f$((1024 * 1024 + 7)) 513 512
placement f$((64 * 1024 * 1024)) 32768 32768
echo "placement follows the chunk rule"

# The servers hold ciphertext only.
printf 'a secret sentence that must never reach a server\n' >"$mnt/secret.txt"
if grep -rqa "a secret sentence" "$work/servers/https" "$work/servers/tcp" ||
  grep -rqa "secret.txt" "$work/servers/https" "$work/servers/tcp"; then
  fail "plaintext on a server"
fi
echo "no plaintext on the servers"

splitfs umount "$mnt"
mountpoint -q "$mnt" && fail "still mounted at the end"
echo "mount test passed"
