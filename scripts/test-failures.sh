#!/usr/bin/env bash
# After a failed ctest run: the failed assertions of each failed test, taken from the run's log
# (BUILD/Testing/Temporary/LastTest.log), so that the end of a long output says what failed.
#
#   scripts/test-failures.sh BUILD
set -euo pipefail

log=${1:?usage: $0 BUILD}/Testing/Temporary/LastTest.log
[ -f "$log" ] || exit 0
awk '
  / Testing: / { sub(/^[0-9]+\/[0-9]+ Testing: /, ""); name = $0; n = 0; next }
  /^<end of output>$/ { keep = 0; next }
  /^Output:$/ { keep = 1; next }
  keep { out[n++] = $0; next }
  /^Test Failed\.$/ {
    print "== failed: " name
    shown = 0
    for (i = 0; i < n && shown < 40; ++i) {
      # Catch2: "file:line: FAILED:", the expression, "with expansion:" and its value.
      if (out[i] ~ /FAILED:|failed|error|Error|Timeout|Assertion/) {
        for (j = i; j < n && j < i + 6 && shown < 40; ++j) { print "   " out[j]; ++shown }
        i = j - 1
      }
    }
    if (shown == 0)
      for (i = (n > 10 ? n - 10 : 0); i < n; ++i) print "   " out[i]
  }
' "$log"
