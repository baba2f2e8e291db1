#!/usr/bin/env bash
# The CLI as a user runs it against stand-ins for the problem statement's original servers,
# started by scripts/legacy-up.sh: the init warning, byte-identical round trips at the chunk
# boundaries, placement seen from each server, nothing readable in either folder, rm, and a
# stopped server.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-legacy-cli.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/legacy-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# init said plainly what does not hold, and pinned nothing.
for text in "no TLS" "no authentication" "no delete"; do
  grep -q "$text" "$work/servers/init.warning" || fail "init warning lacks '$text'"
done
grep -q "legacy = true" "$SPLITFS_HOME/config.toml" || fail "config is not legacy"
if grep -q fingerprint "$SPLITFS_HOME/config.toml"; then fail "a fingerprint in a legacy config"; fi

mkdir -p "$work/in" "$work/out"
sizes=(0 1 1023 1024 1025 2047 2048 2049 $((1024 * 1024 + 7)))
for size in "${sizes[@]}"; do
  head -c "$size" /dev/urandom >"$work/in/f$size"
done
splitfs store "$work"/in/f* >/dev/null
for size in "${sizes[@]}"; do
  splitfs fetch "f$size" -o "$work/out" >/dev/null
  cmp "$work/in/f$size" "$work/out/f$size" || fail "round trip of $size bytes"
done
echo "round trips: ${#sizes[@]} sizes byte-identical"

listing=$(splitfs ls)
for size in "${sizes[@]}"; do
  grep -qE "^ +$size +[0-9]+ chunks .* f$size\$" <<<"$listing" || fail "ls lacks f$size: $listing"
done

# Placement as each server reports it: chunks 1, 3, 5 on HTTP, 2, 4 on TCP.
head -c $((4 * 1024 + 100)) /dev/urandom >"$work/in/five"
splitfs store "$work/in/five" >/dev/null
stat_out=$(splitfs stat five)
grep -q "^chunks:    5 " <<<"$stat_out" || fail "stat chunks: $stat_out"
grep -qE "^HTTPS .*: 3 chunks in 1 shares" <<<"$stat_out" || fail "HTTP placement: $stat_out"
grep -qE "^TCP .*: 2 chunks in 1 shares" <<<"$stat_out" || fail "TCP placement: $stat_out"
# ... and as their folders hold it: the one share each, its pieces within the 4 KiB bound.
for side in https tcp; do
  big=$(find "$work/servers/$side" -type f -size +4096c | head -1)
  [ -z "$big" ] || fail "$side holds a piece over 4096 bytes: $big"
done
echo "placement: 3 chunks on HTTP, 2 on TCP"

# Neither folder holds the text or the name.
printf 'first version of a secret text\n' >"$work/in/doc"
splitfs store "$work/in/doc" --as notes/secret-name.txt >/dev/null
printf 'second version of a secret text, longer\n' >"$work/in/doc"
splitfs store "$work/in/doc" --as notes/secret-name.txt >/dev/null
splitfs fetch notes/secret-name.txt -o "$work/out/doc" >/dev/null
cmp "$work/in/doc" "$work/out/doc" || fail "overwrite"
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
splitfs stat notes/secret-name.txt | grep -c "^version:   2" >/dev/null || fail "version did not grow"
if grep -rqa "secret text" "$work/servers/https" "$work/servers/tcp"; then fail "plaintext on a server"; fi
if grep -rqa "secret-name" "$work/servers/https" "$work/servers/tcp"; then fail "name on a server"; fi

# rm hides the file: fetch is then not found (3), a second rm too.
splitfs rm f1 >/dev/null
set +e
splitfs fetch f1 -o "$work/out/f1-again" 2>/dev/null; code=$?
set -e
[ "$code" -eq 3 ] || fail "fetch after rm exit code $code"
set +e
splitfs rm f1 2>/dev/null; code=$?
set -e
[ "$code" -eq 3 ] || fail "second rm exit code $code"

# Altered data on a server: integrity failure (4), nothing written.
# Every share's first piece on the TCP side (one chosen by name might belong to the removed f1).
for piece in "$work/servers/tcp"/splitfs-s-*.0; do
  printf 'X' | dd of="$piece" bs=1 seek=200 conv=notrunc 2>/dev/null
done
damaged=0
for size in "${sizes[@]}"; do
  set +e
  splitfs fetch "f$size" -o "$work/out/check" 2>/dev/null; code=$?
  set -e
  rm -f "$work/out/check"
  if [ "$code" -eq 4 ]; then damaged=$((damaged + 1)); elif [ "$code" -ne 0 ] && [ "$code" -ne 3 ]; then
    fail "fetch of f$size exit code $code"
  fi
done
[ "$damaged" -ge 1 ] || fail "no fetch noticed the altered piece"

# A stopped server: unavailable (5), within seconds.
kill "$(cat "$work/servers/tcp.pid")"
start=$(date +%s)
set +e
splitfs fetch f1023 -o "$work/out/late" 2>"$work/err"; code=$?
set -e
[ "$code" -eq 5 ] || fail "stopped server exit code $code: $(cat "$work/err")"
[ $(($(date +%s) - start)) -le 5 ] || fail "a stopped server took too long to report"
grep -q "TCP server at" "$work/err" || fail "message does not name the server: $(cat "$work/err")"
echo "legacy cli: all checks passed"
