#!/usr/bin/env bash
# Unmounts a splitfs mount and waits until the changes still pending are stored.
#
#   mount-scripts/umount.sh MOUNTPOINT [--lazy]
#
# --lazy detaches a busy mount at once; its process still stores everything before it exits.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ] || { [ $# -eq 2 ] && [ "$2" != "--lazy" ]; }; then
  echo "usage: $0 MOUNTPOINT [--lazy]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
splitfs=$bin/splitfs
[ -x "$splitfs" ] || splitfs=$(command -v splitfs) || {
  echo "splitfs is not built: run make" >&2
  exit 1
}
"$splitfs" umount "$@"
echo "unmounted $1"
