#!/usr/bin/env bash
# Accounts and keys as an operator and a user meet them, against real servers started by
# scripts/local-up.sh: the local client is enrolled with no manual step; another machine is refused
# (exit 6, naming its fingerprint) until enrolled; a quota gives exit 9 with "quota exceeded"; a
# revoked user is refused on its next command; the key moves to another machine only under a
# passphrase.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-security.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
unset SPLITFS_IDENTITY SPLITFS_PASSPHRASE SPLITFS_NEW_PASSPHRASE
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
https() { "$bin/splitfs-https-server" --data "$work/servers/https" "$@"; }
tcp() { "$bin/splitfs-tcp-server" --data "$work/servers/tcp" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE CMD...: runs CMD, which must exit with CODE; its stderr is in $work/err.
expect() {
  local want=$1 code=0
  shift
  "$@" >"$work/out" 2>"$work/err" || code=$?
  [ "$code" -eq "$want" ] || fail "$* exited $code, not $want: $(cat "$work/err")"
}

# local-up.sh enrolled this client: it works at once.
head -c 100000 /dev/urandom >"$work/file"
splitfs store "$work/file" --as first >/dev/null
fingerprint=$(splitfs id)
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
https users list | grep -c "^local .*$fingerprint" >/dev/null || fail "local user not listed: $(https users list)"
tcp users list | grep -c "^local .*$fingerprint" >/dev/null || fail "local user not listed on TCP"
echo "local client enrolled by local-up.sh"

# A second machine is refused until enrolled, and is told its fingerprint.
other="$work/other"
"$bin/splitfs" --home "$other" init \
  --https "$(grep -m1 '^listening' "$work/servers/https.log" | awk '{print $3}')" \
  --https-fingerprint "$(grep -m1 '^listening' "$work/servers/https.log" | awk '{print $5}')" \
  --tcp "$(grep -m1 '^listening' "$work/servers/tcp.log" | awk '{print $3}')" \
  --tcp-fingerprint "$(grep -m1 '^listening' "$work/servers/tcp.log" | awk '{print $5}')" \
  >"$work/init.out"
other_fpr=$(splitfs --home "$other" id)
grep -q "$other_fpr" "$work/init.out" || fail "init did not show the client fingerprint"
expect 6 splitfs --home "$other" ls
grep -q "not enrolled" "$work/err" || fail "refusal message: $(cat "$work/err")"
grep -q "$other_fpr" "$work/err" || fail "refusal does not name the fingerprint: $(cat "$work/err")"
echo "unenrolled client refused with exit 6"

# Enrolled as another user with a quota: it works, its files are its own, the quota holds.
https users add bob "$other_fpr" --quota 100K >/dev/null
tcp users add bob "$other_fpr" --quota 100K >/dev/null
expect 0 splitfs --home "$other" ls
[ ! -s "$work/out" ] || fail "bob sees local's files: $(cat "$work/out")"
head -c 50000 /dev/urandom >"$work/small"
splitfs --home "$other" store "$work/small" >/dev/null
head -c 300000 /dev/urandom >"$work/big"
expect 9 splitfs --home "$other" store "$work/big"
grep -q "quota exceeded" "$work/err" || fail "quota message: $(cat "$work/err")"
splitfs --home "$other" fetch small -o "$work/small.back" >/dev/null
cmp "$work/small" "$work/small.back" || fail "the stored file changed after the quota refusal"
echo "quota exceeded: exit 9, earlier file intact"

# Revoked: refused on the next command; the local user is unaffected.
https users revoke bob >/dev/null
tcp users revoke bob >/dev/null
expect 6 splitfs --home "$other" ls
splitfs fetch first -o "$work/first.back" >/dev/null
cmp "$work/file" "$work/first.back" || fail "local user's file"
echo "revoked client refused with exit 6"

# The key: exported under a passphrase, imported on the other machine, which (enrolled as the
# same user) then reads the local user's files.
export SPLITFS_PASSPHRASE="a passphrase for the test"
splitfs key export "$work/exported.key" >/dev/null
[ "$(stat -c %a "$work/exported.key")" = 600 ] || fail "exported key mode"
grep -q "^splitfs-key-v1-scrypt:" "$work/exported.key" || fail "export is not protected"
if grep -q "$(cut -d: -f2 "$SPLITFS_HOME/key")" "$work/exported.key"; then fail "key in clear"; fi
expect 7 splitfs --home "$other" key import "$work/exported.key"  # another key is there already
SPLITFS_PASSPHRASE=wrong expect 7 splitfs --home "$other" key import "$work/exported.key" --force
splitfs --home "$other" key import "$work/exported.key" --force >/dev/null
https users add local "$other_fpr" >/dev/null
tcp users add local "$other_fpr" >/dev/null
splitfs --home "$other" fetch first -o "$work/first.other" >/dev/null
cmp "$work/file" "$work/first.other" || fail "second machine's fetch"
unset SPLITFS_PASSPHRASE
expect 7 splitfs --home "$other" ls  # the imported key stays protected; no passphrase, no tty
grep -q "SPLITFS_PASSPHRASE" "$work/err" || fail "passphrase message: $(cat "$work/err")"
SPLITFS_PASSPHRASE="a passphrase for the test" SPLITFS_NEW_PASSPHRASE="another one" \
  splitfs --home "$other" key passwd >/dev/null
SPLITFS_PASSPHRASE="another one" expect 0 splitfs --home "$other" ls
echo "key export/import/passwd: protected, and works on the second machine"
echo "security cli: all checks passed"
