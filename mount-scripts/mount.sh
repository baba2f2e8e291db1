#!/usr/bin/env bash
# Mounts the splitfs store as a folder, with sensible defaults, and returns once it is ready.
#
#   mount-scripts/mount.sh MOUNTPOINT [OPTION,...]     e.g. mount.sh ~/vault cache_size=1G
#
# The store is the client home in $SPLITFS_HOME (default ~/.config/splitfs, made by
# `splitfs init`). The folder is created if missing. Run as root, the mount is open to other
# users (allow_other), who are checked against the stored owners and modes.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 MOUNTPOINT [OPTION,...]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
splitfs=$bin/splitfs
[ -x "$splitfs" ] || splitfs=$(command -v splitfs) || {
  echo "splitfs is not built: run make" >&2
  exit 1
}
mountpoint=$1
mkdir -p "$mountpoint"
if mountpoint -q "$mountpoint"; then
  echo "$mountpoint is already a mount point" >&2
  exit 1
fi
options="cache_size=${SPLITFS_CACHE_SIZE:-256M}"
if [ "$(id -u)" -eq 0 ]; then options="$options,allow_other"; fi
if [ $# -eq 2 ]; then options="$options,$2"; fi
"$splitfs" mount "$mountpoint" -o "$options"
echo "mounted on $mountpoint (unmount with mount-scripts/umount.sh $mountpoint)"
