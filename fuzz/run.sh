#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS each, starting from the seed corpus in fuzz/corpus/<name>
# and keeping what it learns in BUILD/fuzz/corpus-<name>. A crash, leak, timeout or sanitizer report
# fails the run and leaves the input that caused it in BUILD/fuzz/findings/.
#
#   fuzz/run.sh BUILD SECONDS [TARGET...]     (targets: frame http manifest share)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD SECONDS [TARGET...]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$(realpath "$1")
seconds=$2
shift 2
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame http manifest share)
mkdir -p "$build/fuzz/findings"
status=0
for target in "${targets[@]}"; do
  corpus="$build/fuzz/corpus-$target"
  mkdir -p "$corpus"
  log="$build/fuzz/$target.log"
  echo "fuzz_$target: ${seconds} s (log: $log)"
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/fuzz/findings/$target-" \
    "$corpus" "$here/corpus/$target" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -2 | sed 's/^/  /'
  else
    echo "  FINDING: see $log and $build/fuzz/findings/" >&2
    tail -30 "$log" >&2
    status=1
  fi
done
exit $status
