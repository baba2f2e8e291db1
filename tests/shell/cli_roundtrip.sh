#!/usr/bin/env bash
# The CLI as a user runs it, against real servers started by scripts/local-up.sh: byte-identical
# round trips at the chunk boundaries, placement seen from the servers, no plaintext on disk,
# and the documented exit codes.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-cli.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

mkdir -p "$work/in" "$work/out"
sizes=(0 1 1023 1024 1025 2047 2048 2049 $((1024 * 1024 + 7)) $((64 * 1024 * 1024)))
for size in "${sizes[@]}"; do
  head -c "$size" /dev/urandom >"$work/in/f$size"
done
splitfs store "$work"/in/f* >/dev/null
for size in "${sizes[@]}"; do
  splitfs fetch "f$size" -o "$work/out" >/dev/null
  cmp "$work/in/f$size" "$work/out/f$size" || fail "round trip of $size bytes"
done
echo "round trips: ${#sizes[@]} sizes byte-identical"

# ls shows every file with its size.
listing=$(splitfs ls)
for size in "${sizes[@]}"; do
  grep -qE "^ +$size +[0-9]+ chunks .* f$size\$" <<<"$listing" || fail "ls lacks f$size: $listing"
done

# A 5-chunk file: 3 chunks on HTTPS, 2 on TCP, as the servers report them.
head -c $((4 * 1024 + 100)) /dev/urandom >"$work/in/five"
splitfs store "$work/in/five" >/dev/null
stat_out=$(splitfs stat five)
grep -q "^chunks:    5 " <<<"$stat_out" || fail "stat chunks: $stat_out"
grep -qE "^HTTPS .*: 3 chunks" <<<"$stat_out" || fail "HTTPS placement: $stat_out"
grep -qE "^TCP .*: 2 chunks" <<<"$stat_out" || fail "TCP placement: $stat_out"
echo "placement: 3 chunks on HTTPS, 2 on TCP"

# --as, overwrite and version growth.
printf 'first version of a secret text\n' >"$work/in/doc"
splitfs store "$work/in/doc" --as notes/secret-name.txt >/dev/null
printf 'second version of a secret text, longer\n' >"$work/in/doc"
splitfs store "$work/in/doc" --as notes/secret-name.txt >/dev/null
splitfs fetch notes/secret-name.txt -o "$work/out/doc" >/dev/null
cmp "$work/in/doc" "$work/out/doc" || fail "overwrite"
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
splitfs stat notes/secret-name.txt | grep -c "^version:   2" >/dev/null || fail "version did not grow"

# Neither server's folder holds the text or the name.
if grep -rqa "secret text" "$work/servers/https" "$work/servers/tcp"; then fail "plaintext on a server"; fi
if grep -rqa "secret-name" "$work/servers/https" "$work/servers/tcp"; then fail "name on a server"; fi

# Exit codes: not found 3, usage 2; a failed fetch leaves no file.
set +e
splitfs fetch no-such-file -o "$work/out" 2>"$work/err"; code=$?
set -e
[ "$code" -eq 3 ] || fail "not found exit code $code"
grep -q "no stored file named 'no-such-file'" "$work/err" || fail "not found message: $(cat "$work/err")"
[ ! -e "$work/out/no-such-file" ] || fail "output left behind"
set +e
splitfs store 2>/dev/null; code=$?
set -e
[ "$code" -eq 2 ] || fail "usage exit code $code"

# rm removes; a second rm is not found.
splitfs rm f1 >/dev/null
set +e
splitfs rm f1 2>/dev/null; code=$?
set -e
[ "$code" -eq 3 ] || fail "second rm exit code $code"
echo "cli: all checks passed"
