#!/usr/bin/env bash
# The errors a person meets, each provoked for real against real servers, with the exit code and
# words that say what to do: a name not found ("did you mean"), data failing verification (which
# server sent it; our servers and the original-protocol stand-ins), a quota, a client not
# enrolled, a server whose TLS identity changed, and a server that is not running (which one, its
# address, "is it started?", `splitfs status`).
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-clierr.XXXXXX)
cleanup() {
  "$root/scripts/local-down.sh" "$work/servers" || true
  "$root/scripts/local-down.sh" "$work/legacy" || true
  if [ -f "$work/new-https.pid" ]; then kill "$(cat "$work/new-https.pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
unset SPLITFS_IDENTITY SPLITFS_PASSPHRASE SPLITFS_NEW_PASSPHRASE
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {
  local want=$1 code=0
  shift
  "$@" >"$work/out" 2>"$work/err" || code=$?
  [ "$code" -eq "$want" ] || fail "$* exited $code, not $want: $(cat "$work/err")"
}
says() { grep -qF -- "$1" "$work/err" || fail "expected '$1' in: $(cat "$work/err")"; }
listening() { grep -m1 '^listening on ' "$work/servers/$1.log" | awk -v n="$2" '{print $n}'; }
https_address=$(listening https 3)
tcp_address=$(listening tcp 3)

head -c 200000 /dev/urandom >"$work/report.pdf"
splitfs store "$work/report.pdf" --as docs/report.pdf >/dev/null
splitfs store "$work/report.pdf" --as annual-report.pdf >/dev/null

# Not found: the closest stored names are offered, for every command that takes a name.
expect 3 splitfs fetch docs/reprot.pdf -o "$work/x"
says "no stored file named 'docs/reprot.pdf' - did you mean 'docs/report.pdf'?"
[ ! -e "$work/x" ] || fail "a failed fetch left a file"
expect 3 splitfs stat report.pdf
says "did you mean 'docs/report.pdf'?"
expect 3 splitfs verify annual-reprt.pdf
says "did you mean 'annual-report.pdf'?"
expect 3 splitfs rm nothing-like-it
says "no stored file named 'nothing-like-it' (\`splitfs ls\` lists the stored files)"
echo "not found: exit 3 with 'did you mean'"

# A client that is not enrolled: exit 6, its fingerprint, and how to get it enrolled.
other="$work/other"
splitfs --home "$other" init --https "$https_address" --https-fingerprint "$(listening https 5)" \
  --tcp "$tcp_address" --tcp-fingerprint "$(listening tcp 5)" >/dev/null
other_fpr=$(splitfs --home "$other" id)
expect 6 splitfs --home "$other" ls
says "not enrolled"
says "$other_fpr"
says "users add"
says "splitfs id"
echo "not enrolled: exit 6 naming the fingerprint and users add"

# A quota: exit 9, which server, and what to do about it.
for door in https tcp; do
  "$bin/splitfs-$door-server" --data "$work/servers/$door" users add bob "$other_fpr" \
    --quota 100K >/dev/null
done
head -c 400000 /dev/urandom >"$work/big.bin"
expect 9 splitfs --home "$other" store "$work/big.bin"
says "quota"
says "server at"
says "splitfs df"
echo "quota: exit 9 naming the server and splitfs df"

# Data that fails verification, detected by our server: exit 4 naming it; nothing written.
for pack in "$work/servers/tcp/store/packs/"*.pack; do
  size=$(stat -c %s "$pack")
  for offset in $((size / 4)) $((size / 2)) $((size * 3 / 4)); do
    printf '\x5a' | dd of="$pack" bs=1 seek="$offset" conv=notrunc status=none
  done
done
expect 4 splitfs fetch docs/report.pdf -o "$work/damaged.pdf"
says "TCP server at $tcp_address"
[ ! -e "$work/damaged.pdf" ] || fail "a failed fetch left the file"
expect 4 splitfs verify docs/report.pdf
says "TCP server at $tcp_address"
echo "integrity (our server): exit 4 naming the TCP server"

# The TLS identity of the HTTPS server changes (the server re-created on the same address): exit
# 6, said as such, with the warning not to re-pin blindly.
kill "$(cat "$work/servers/https.pid")"
while kill -0 "$(cat "$work/servers/https.pid")" 2>/dev/null; do sleep 0.1; done
"$bin/splitfs-https-server" --data "$work/new-https" users add local "$(splitfs id)" >/dev/null
"$bin/splitfs-https-server" --data "$work/new-https" --port "${https_address##*:}" \
  >"$work/new-https.log" 2>&1 &
echo $! >"$work/new-https.pid"
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$work/new-https.log" && break
  sleep 0.1
done
grep -q '^listening on ' "$work/new-https.log" || fail "the new server did not start: $(cat "$work/new-https.log")"
expect 6 splitfs ls
says "TLS identity changed"
says "HTTPS server at $https_address"
says "is pinned"
says "do not trust it"
echo "TLS identity changed: exit 6, said so, with the fingerprint to compare"
kill "$(cat "$work/new-https.pid")"
rm "$work/new-https.pid"

# A server that is not running: exit 5 within seconds, naming it, its address, and what to check.
start=$(date +%s)
expect 5 splitfs fetch docs/report.pdf -o "$work/late.pdf"
[ $(($(date +%s) - start)) -le 10 ] || fail "a stopped server took too long to report"
says "HTTPS server at $https_address is not reachable"
says "is it started?"
says "splitfs status"
expect 5 splitfs status
grep -q "UNREACHABLE" "$work/out" || fail "status: $(cat "$work/out")"
# Several files: the first unavailable server stops the command instead of repeating the wait.
expect 5 splitfs verify a b c
[ "$(grep -c "is not reachable" "$work/err")" -eq 1 ] || fail "retried every item: $(cat "$work/err")"
says "2 more item(s) not attempted"
echo "server not running: exit 5 naming it, its address and splitfs status; the rest not attempted"

# The original-protocol stand-ins keep no checksums: a share altered on the TCP side is caught by
# the client itself (each object's SHA-256, then the share's authentication), naming the server.
eval "$("$root/scripts/legacy-up.sh" "$work/legacy" 2>/dev/null)"
head -c 20000 /dev/urandom >"$work/small.bin"
splitfs store "$work/small.bin" >/dev/null
for piece in "$work/legacy/tcp"/splitfs-s-*.0; do
  printf 'X' | dd of="$piece" bs=1 seek=200 conv=notrunc status=none
done
legacy_tcp=$(awk -F"'" '/^ *address/ { last = $2 } END { print last }' "$SPLITFS_HOME/config.toml")
expect 4 splitfs verify small.bin
says "TCP server at $legacy_tcp"
echo "integrity (client check): exit 4 naming the TCP server that sent altered data"
echo "cli errors: all checks passed"
