#!/usr/bin/env bash
# Every everyday command as a script runs it, against real servers started by scripts/local-up.sh:
# store and fetch of several files and of folders (-r), verify, ls (long form, sorting, prefix),
# stat, df, status, config show, quarantine list and a mount's stats refused off a mount; --json
# output parsed; the documented exit codes; a failing item does not stop the others; no progress
# drawn when the output is not a terminal; every subcommand's --help has an example.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-clicmd.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
umask 022
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect CODE CMD...: runs CMD, which must exit with CODE; its stdout and stderr are in
# $work/out and $work/err.
expect() {
  local want=$1 code=0
  shift
  "$@" >"$work/out" 2>"$work/err" || code=$?
  [ "$code" -eq "$want" ] || fail "$* exited $code, not $want: $(cat "$work/err")"
}
# json EXPR: evaluates the Python expression EXPR on the JSON in $work/out (bound to j); fails
# the test if it is false or the output does not parse.
json() {
  python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)' "$work/out" "$1" || fail "json check '$1' on: $(cat "$work/out")"
}

# A folder with files at three depths, a symlink (skipped) and an empty file.
mkdir -p "$work/photos/2024/summer" "$work/photos/2025"
head -c 300000 /dev/urandom >"$work/photos/2024/summer/beach.jpg"
head -c 5000 /dev/urandom >"$work/photos/2024/cat.jpg"
head -c 70000 /dev/urandom >"$work/photos/2025/dog.jpg"
: >"$work/photos/empty.txt"
ln -s 2024/cat.jpg "$work/photos/link.jpg"
printf 'notes\n' >"$work/notes.txt"

# A folder without -r is a usage error with a hint, and nothing is stored.
expect 2 splitfs store "$work/photos"
grep -q "is a folder: store it .* with -r" "$work/err" || fail "no -r hint: $(cat "$work/err")"
expect 0 splitfs ls
[ ! -s "$work/out" ] || fail "a refused store stored something: $(cat "$work/out")"

# store -r: every regular file under photos/, by its relative path; the symlink is skipped and
# said so; nothing on stderr is progress (not a terminal).
expect 0 splitfs store -r "$work/photos" "$work/notes.txt"
[ "$(grep -c '^stored ' "$work/out")" -eq 5 ] || fail "store -r output: $(cat "$work/out")"
grep -q "skipped .*link.jpg" "$work/err" || fail "symlink not reported: $(cat "$work/err")"
if grep -qE $'\r|ETA|/s ' "$work/err" "$work/out"; then fail "progress drawn off a terminal"; fi
expect 0 splitfs ls --json
json 'sorted(e["name"] for e in j) == ["notes.txt", "photos/2024/cat.jpg", "photos/2024/summer/beach.jpg", "photos/2025/dog.jpg", "photos/empty.txt"]'
json 'all(e["source"] == "store" and e["version"] == 1 for e in j)'
json '{e["name"]: e["size"] for e in j}["photos/2024/summer/beach.jpg"] == 300000'
json '{e["name"]: e["chunks"] for e in j}["photos/2025/dog.jpg"] == 69'
echo "store -r: 4 files of a folder by relative path, symlink skipped, no progress off a terminal"

# ls: prefix, sorting, reverse, long form.
expect 0 splitfs ls photos/2024
[ "$(wc -l <"$work/out")" -eq 2 ] || fail "ls prefix: $(cat "$work/out")"
grep -qE '^ +5000 +5 chunks .* photos/2024/cat.jpg$' "$work/out" || fail "ls line: $(cat "$work/out")"
expect 0 splitfs ls --sort size
[ "$(head -n1 "$work/out" | awk '{print $NF}')" = photos/2024/summer/beach.jpg ] ||
  fail "ls --sort size: $(cat "$work/out")"
expect 0 splitfs ls --sort size -r
[ "$(head -n1 "$work/out" | awk '{print $NF}')" = photos/empty.txt ] ||
  fail "ls --sort size -r: $(cat "$work/out")"
expect 0 splitfs ls --sort name -r --json
json '[e["name"] for e in j] == sorted((e["name"] for e in j), reverse=True)'
sleep 1.1
splitfs store "$work/notes.txt" --as later.txt >/dev/null
expect 0 splitfs ls --sort time --json
json 'j[0]["name"] == "later.txt" and j[0]["stored_at_ns"] >= j[-1]["stored_at_ns"]'
expect 0 splitfs ls -l photos/
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
head -n1 "$work/out" | grep -cE '^size +bytes +chunks +version +stored at +via +name' >/dev/null ||
  fail "ls -l header: $(cat "$work/out")"
grep -qE '^293\.0 KiB +300000 +293 +1 .* store +photos/2024/summer/beach.jpg$' "$work/out" ||
  fail "ls -l line: $(cat "$work/out")"
tail -n1 "$work/out" | grep -c "^4 file(s), " >/dev/null || fail "ls -l total: $(cat "$work/out")"
expect 2 splitfs ls --sort colour
echo "ls: prefix, --sort name|size|time, -r, -l, --json"

# fetch -r recreates the tree under -o (created); a folder without -r is a usage error naming -r.
expect 0 splitfs fetch -r photos -o "$work/restore"
[ "$(grep -c '^fetched ' "$work/out")" -eq 4 ] || fail "fetch -r output: $(cat "$work/out")"
for f in 2024/summer/beach.jpg 2024/cat.jpg 2025/dog.jpg empty.txt; do
  cmp "$work/photos/$f" "$work/restore/photos/$f" || fail "fetch -r of $f"
done
expect 0 splitfs fetch -r photos/2024/ -o "$work/part"
cmp "$work/photos/2024/cat.jpg" "$work/part/2024/cat.jpg" || fail "fetch -r of a subfolder"
[ ! -e "$work/part/2025" ] || fail "fetch -r photos/2024 fetched photos/2025"
expect 2 splitfs fetch photos -o "$work"
grep -q "'photos' is a folder of 4 stored file(s): use \`splitfs fetch -r photos\`" "$work/err" ||
  fail "fetch of a folder: $(cat "$work/err")"
# Several names into a folder; one missing name does not stop the others; exit code 3.
mkdir "$work/several"
expect 3 splitfs fetch notes.txt no-such photos/2025/dog.jpg -o "$work/several"
cmp "$work/notes.txt" "$work/several/notes.txt" || fail "first of several"
cmp "$work/photos/2025/dog.jpg" "$work/several/dog.jpg" || fail "the one after a missing name"
grep -q "no stored file named 'no-such'" "$work/err" || fail "missing name: $(cat "$work/err")"
expect 2 splitfs fetch notes.txt later.txt -o "$work/not-a-folder"
echo "fetch: -r recreates trees, several names, per-item errors, usage errors"

# verify: size, version and the SHA-256 of the content, as text and JSON; nothing written where
# it runs or anywhere else outside the client home and the servers.
mkdir "$work/here"
touch "$work/marker"
cd "$work/here"
expect 0 splitfs verify photos/2024/summer/beach.jpg
sum=$(sha256sum "$work/photos/2024/summer/beach.jpg" | cut -d' ' -f1)
grep -q "^verified photos/2024/summer/beach.jpg: 293.0 KiB (300000 bytes), version 1, .* sha256 $sum\$" \
  "$work/out" || fail "verify output: $(cat "$work/out")"
expect 0 splitfs verify -r photos --json
json 'len(j) == 4 and all(e["ok"] for e in j)'
json '{e["name"]: e["sha256"] for e in j}["photos/2024/summer/beach.jpg"] == "'"$sum"'"'
json '{e["name"]: e["size"] for e in j}["photos/empty.txt"] == 0'
expect 3 splitfs verify notes.txt nothing-here --json
json 'j[0]["ok"] and not j[1]["ok"] and j[1]["exit_code"] == 3 and "nothing-here" in j[1]["error"]'
cd "$work"
written=$(find "$work" -newer "$work/marker" -not -path "$work/servers*" -not -path "$work/out" \
  -not -path "$work/err" -not -path "$work/here")
[ -z "$written" ] || fail "verify wrote $written"
echo "verify: text and --json, sha256 of the content, per-item results"

# stat and df as JSON.
expect 0 splitfs stat photos/2025/dog.jpg --json
json 'j["name"] == "photos/2025/dog.jpg" and j["size"] == 70000 and j["chunks"] == 69'
json '[s["server"] for s in j["servers"]] == ["HTTPS", "TCP"]'
json '[s["chunks"] for s in j["servers"]] == [35, 34]'
json 'j["mode"] == "0644" and j["segment_bytes"] > 0'
expect 0 splitfs df --json
json '[s["server"] for s in j["servers"]] == ["HTTPS", "TCP"] and j["total"]["server"] == "total"'
json 'all(s["files"] == 6 and s["stored_bytes"] > 0 for s in j["servers"])'
json 'j["total"]["data_bytes"] == sum(s["data_bytes"] for s in j["servers"])'
expect 0 splitfs df
grep -qE '^HTTPS +[^ ]+ +6 ' "$work/out" || fail "df text: $(cat "$work/out")"
echo "stat --json (placement per server), df --json"

# status, config show and quarantine list as JSON; stats refuses a folder that is no mount.
expect 0 splitfs status --json
json 'all(s["reachable"] for s in j["servers"]) and len(j["servers"]) == 2'
# The pinned server identities and this client's, as `splitfs id` prints it.
client_id=$(splitfs id | grep -oE 'SHA256:[0-9a-f]{64}' | head -1)
json 'all(s["pinned_fingerprint"].startswith("SHA256:") for s in j["servers"])'
json 'j["client_fingerprint"] == "'"$client_id"'"'
expect 0 splitfs status
grep -qE '^ +identity pinned: SHA256:[0-9a-f]{64}$' "$work/out" || fail "status text: $(cat "$work/out")"
expect 0 splitfs config show --json
json 'any(s["name"] == "key" for s in j["settings"])'
if grep -q "$(head -c 16 "$SPLITFS_HOME/key" | od -An -tx1 | tr -d ' \n')" "$work/out"; then
  fail "config show printed key bytes"
fi
expect 0 splitfs quarantine list --json
json 'isinstance(j, list)'
mkdir "$work/plain"
expect 1 splitfs stats "$work/plain" --json
grep -q "is not a splitfs mount" "$work/err" || fail "stats message: $(cat "$work/err")"
echo "status, config show, quarantine list: --json parses"

# rm: several names, a missing one reported with a suggestion, the rest removed.
expect 3 splitfs rm later.txt notes.tx photos/empty.txt
grep -q "no stored file named 'notes.tx' - did you mean 'notes.txt'?" "$work/err" ||
  fail "rm suggestion: $(cat "$work/err")"
expect 0 splitfs ls --json
json 'not any(e["name"] in ("later.txt", "photos/empty.txt") for e in j)'
json 'any(e["name"] == "notes.txt" for e in j)'

# --quiet: errors only.
expect 0 splitfs store -q "$work/notes.txt" --as quiet.txt
if [ -s "$work/out" ] || [ -s "$work/err" ]; then fail "--quiet printed: $(cat "$work/out" "$work/err")"; fi
expect 0 splitfs fetch -q quiet.txt -o "$work/quiet.back"
[ ! -s "$work/out" ] || fail "--quiet fetch printed: $(cat "$work/out")"
cmp "$work/notes.txt" "$work/quiet.back" || fail "quiet fetch"

# Usage errors exit 2.
expect 2 splitfs store
expect 2 splitfs store "$work/no-such-file"
expect 2 splitfs store "$work/notes.txt" "$work/photos" --as x
expect 2 splitfs frobnicate
expect 2 splitfs verify
echo "rm, --quiet and usage errors"

# Every subcommand's --help shows an example, and exits 0.
commands=(init id key "key export" "key import" "key passwd" store fetch verify scan quarantine
  "quarantine list" ls rm stat df mount umount stats status config "config show")
for command in "${commands[@]}"; do
  # shellcheck disable=SC2086
  help=$(splitfs $command --help) || fail "$command --help exited non-zero"
  grep -q "^Example" <<<"$help" || fail "'$command --help' has no example: $help"
done
splitfs --help | grep -c "^Examples:" >/dev/null || fail "splitfs --help has no examples"
echo "--help: an example for each of ${#commands[@]} subcommands"
echo "cli commands: all checks passed"
