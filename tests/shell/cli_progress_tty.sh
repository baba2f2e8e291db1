#!/usr/bin/env bash
# Progress on a terminal (a pseudo-terminal from python3's pty): store, fetch and verify redraw one
# line per file in place (carriage return, erase line) with bytes, a rate and the time left, at
# most about ten times a second, then print a total line. With --quiet, or when stdout is not
# the terminal, nothing of it is drawn.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-clitty.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
fail() { echo "FAIL: $*" >&2; exit 1; }

# on_tty OUT CMD...: runs CMD on a pseudo-terminal (stdin, stdout and stderr), writes everything
# it drew to OUT and the seconds it took to OUT.time; fails if CMD fails.
on_tty() {
  local out=$1
  shift
  python3 - "$out" "$@" <<'EOF'
import os, pty, sys, time
out, argv = sys.argv[1], sys.argv[2:]
start = time.monotonic()
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "xterm"
    os.execv(argv[0], argv)
data = b""
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:  # the terminal closes once the program has exited
        break
    if not chunk:
        break
    data += chunk
_, status = os.waitpid(pid, 0)
with open(out, "wb") as f:
    f.write(data)
with open(out + ".time", "w") as f:
    f.write("%.3f\n" % (time.monotonic() - start))
code = os.waitstatus_to_exitcode(status)
if code != 0:
    sys.stderr.write("%s exited %d: %r\n" % (" ".join(argv), code, data[-2000:]))
    sys.exit(1)
EOF
}

# check_drawing OUT LABEL FILES: OUT shows LABEL's line redrawn in place with a rate and a time
# left, no more often than about ten times a second, and a total line for FILES files.
check_drawing() {
  python3 - "$@" <<'EOF'
import re, sys
out, label, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(out, "rb").read().decode("utf-8", "replace")
seconds = float(open(out + ".time").read())
def fail(why):
    sys.exit("FAIL: %s: %s\n%r" % (out, why, data[-3000:]))
draws = [d for d in data.split("\r\x1b[K") if label in d and " / " in d]
if len(draws) < 2:
    fail("the line of %s was not redrawn (%d draws)" % (label, len(draws)))
rated = [d for d in draws if re.search(r"[0-9.]+ (B|KiB|MiB|GiB)/s  ETA [0-9]+:[0-9]{2}", d)]
if not rated:
    fail("no draw shows a rate and a time left")
if not any(re.search(r"\b100%", d) for d in draws):
    fail("the line never reached 100%")
if len(draws) > seconds * 10 * files + 2 * files + 2:
    fail("%d draws in %.1f s: more than ten a second" % (len(draws), seconds))
if not re.search(r"total: %d files?, [0-9.]+ (B|KiB|MiB|GiB) in [0-9.:]+( s)?, [0-9.]+ (B|KiB|MiB|GiB)/s" % files, data):
    fail("no total line")
print("%s: %d draws in %.1f s, %d with a rate" % (label, len(draws), seconds, len(rated)))
EOF
}

head -c $((96 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
printf 'small\n' >"$work/small.txt"

on_tty "$work/store.tty" "$bin/splitfs" store "$work/big.bin" "$work/small.txt"
check_drawing "$work/store.tty" "[1/2] big.bin" 2
grep -q "stored $work/big.bin as big.bin" "$work/store.tty" || fail "store result line missing"

on_tty "$work/fetch.tty" "$bin/splitfs" fetch big.bin -o "$work/big.back"
check_drawing "$work/fetch.tty" "big.bin" 1
cmp "$work/big.bin" "$work/big.back" || fail "fetch on a terminal"

on_tty "$work/verify.tty" "$bin/splitfs" verify big.bin
check_drawing "$work/verify.tty" "big.bin" 1
grep -q "sha256 $(sha256sum "$work/big.bin" | cut -d' ' -f1)" "$work/verify.tty" ||
  fail "verify result line missing"

# A failure among several files is printed on a line of its own, not into a progress line.
mkdir "$work/several"
on_tty "$work/failing.tty" /bin/sh -c \
  "'$bin/splitfs' fetch big.bin no-such-file small.txt -o '$work/several'; echo exit=\$?"
python3 - "$work/failing.tty" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
at = data.find("splitfs: no stored file named 'no-such-file'")
if at < 0 or not data[:at].endswith(("\r\x1b[K", "\n")):
    sys.exit("FAIL: the error is not on a line of its own: %r" % data[-1500:])
if "exit=3" not in data or "total: 3 files" not in data or "1 failed" not in data:
    sys.exit("FAIL: exit code or total line: %r" % data[-1500:])
EOF
cmp "$work/big.bin" "$work/several/big.bin" || fail "fetch of several on a terminal"
echo "a failure between transfers: on a line of its own, counted in the total"

# --quiet on a terminal, and a terminal whose stdout is redirected: no drawing, no total.
on_tty "$work/quiet.tty" "$bin/splitfs" fetch -q big.bin -o "$work/big.quiet"
on_tty "$work/redirected.tty" /bin/sh -c "exec '$bin/splitfs' verify big.bin >'$work/verify.out'"
for tty in quiet redirected; do
  if grep -q $'\r\033\\[K\\|total:' "$work/$tty.tty"; then
    fail "progress drawn with $tty output: $(cat -v "$work/$tty.tty")"
  fi
done
grep -q "^verified big.bin" "$work/verify.out" || fail "redirected verify output: $(cat "$work/verify.out")"
echo "progress: drawn in place on a terminal for store, fetch and verify; none with --quiet or"
echo "  with stdout redirected"
echo "cli progress on a terminal: all checks passed"
