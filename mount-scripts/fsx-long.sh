#!/usr/bin/env bash
# The long run of the mount's random-operation exerciser: 100,000 operations (writes, truncates,
# reads, mmap reads and writes, O_DIRECT, fsync, reopen, remount) on a file in a real mount,
# checked against a local file. `make test` runs a short version of the same test.
#
#   mount-scripts/fsx-long.sh [OPERATIONS] [SEED]
#
# It prints the seed and what it did; on a failure, pass the seed again to replay the sequence.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$root/build}
export SPLITFS_FSX_OPS=${1:-100000}
if [ $# -ge 2 ]; then export SPLITFS_FSX_SEED=$2; fi
exec "$build/tests/integration_test" "mount: fsx random operations against a local file"
