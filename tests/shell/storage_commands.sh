#!/usr/bin/env bash
# The storage commands as an operator and a user run them: `splitfs df`, and each server's
# `stats`, `check` and `compact`, beside a running server and on a stopped one; `check` fails with
# a report on a damaged store; deleting and compacting gives the space back.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-storage.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
https() { "$bin/splitfs-https-server" --data "$work/servers/https" "$@"; }
tcp() { "$bin/splitfs-tcp-server" --data "$work/servers/tcp" "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
field() { awk -v key="$1" 'index($0, "  " key " ") == 1 { sub("^  " key " +", ""); print; exit }'; }

head -c $((3 * 1024 * 1024)) /dev/urandom >"$work/random.bin"
for i in $(seq 1 3000); do echo "line $i: the quick brown fox jumps over the lazy dog"; done \
  >"$work/text.txt"
splitfs store "$work/random.bin" >/dev/null
splitfs store "$work/random.bin" --as copy.bin >/dev/null
splitfs store "$work/text.txt" >/dev/null

# df: three files on each server, the copy deduplicated, the text compressed.
df_out=$(splitfs df)
echo "$df_out"
grep -qE '^HTTPS +[^ ]+ +3 ' <<<"$df_out" || fail "df files: $df_out"
grep -qE '^TCP +[^ ]+ +3 ' <<<"$df_out" || fail "df files: $df_out"
dedup=$(grep '^total' <<<"$df_out" | grep -oE '[0-9.]+x' | head -n1 | tr -d x)
awk -v d="$dedup" 'BEGIN { exit !(d > 1.9 && d < 2.0) }' || fail "dedup ratio $dedup"

# stats and check beside the running servers.
stats=$(https stats)
grep -q "in use by a running server" <<<"$stats" || fail "stats did not see the running server"
[ "$(field files <<<"$stats")" = 3 ] || fail "stats files: $stats"
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
https check | grep -c "consistent" >/dev/null || fail "live check"
echo "stats and check work beside a running server"

# Removing the files leaves their shares until a compaction; a compaction asked of the running
# servers reports what it reclaimed.
splitfs rm random.bin copy.bin text.txt >/dev/null
[ "$(field unreferenced <<<"$(tcp stats)" | cut -d' ' -f1)" -gt 0 ] || fail "no garbage after rm"
before=$(du -sb "$work/servers/https/store" | cut -f1)
compact_out=$(https compact --grace 0 --wait 30)
grep -q "unreferenced dropped" <<<"$compact_out" || fail "compact report: $compact_out"
tcp compact --grace 0 --wait 30 >/dev/null
after=$(du -sb "$work/servers/https/store" | cut -f1)
[ "$after" -lt $((before / 10)) ] || fail "compaction left $after of $before bytes"
grep -q "compaction (" "$work/servers/https.log" || fail "the server did not log its compaction"
echo "compaction on a running server: $before -> $after bytes"

# On stopped servers: store again, stop, then check offline; a flipped byte is reported and check
# exits 1.
splitfs store "$work/random.bin" >/dev/null
"$root/scripts/local-down.sh" "$work/servers"
tcp check >/dev/null || fail "offline check"
pack=$(ls "$work/servers/tcp/store/packs/"*.pack | head -n1)
printf '\xff' | dd of="$pack" bs=1 seek=100 conv=notrunc status=none
set +e
check_out=$(tcp check 2>&1)
code=$?
set -e
[ "$code" -eq 1 ] || fail "check of a damaged store exited $code: $check_out"
grep -q "PROBLEM: .*fails its checksum" <<<"$check_out" || fail "check report: $check_out"
echo "offline check finds a damaged record (exit 1)"

# Offline compaction and stats; usage errors.
https compact --grace 0 >/dev/null
https stats | grep -c "last compaction .*(command)" >/dev/null || fail "offline compaction not recorded"
set +e
https compact --grace -1 >/dev/null 2>&1
code=$?
"$bin/splitfs-https-server" --data "$work/nowhere" check >/dev/null 2>&1
missing=$?
set -e
[ "$code" -eq 2 ] || fail "a negative grace period exited $code"
[ "$missing" -eq 1 ] || fail "check of a missing store exited $missing"
[ ! -e "$work/nowhere" ] || fail "check created a store"
echo "storage commands: all good"
