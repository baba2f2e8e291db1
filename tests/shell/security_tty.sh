#!/usr/bin/env bash
# Passphrases typed on a terminal (a pseudo-terminal from script(1)): init --passphrase asks twice
# without echo, a protected key is asked for once per command, a wrong answer is refused (exit 7),
# a mismatched confirmation is refused, and export asks for the current passphrase first.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-tty.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; rm -rf "$work"' EXIT
unset SPLITFS_IDENTITY SPLITFS_PASSPHRASE SPLITFS_NEW_PASSPHRASE
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
fail() { echo "FAIL: $*" >&2; exit 1; }

# prompts: how many passphrase prompts the transcript shows so far.
prompts() { grep -Eio 'passphrase[^:]*: |again, to confirm: ' "$work/tty" | wc -l; }

# on_tty ANSWERS CMD: runs CMD on a pseudo-terminal, typing line N of ANSWERS once the N-th prompt
# shows; the transcript is in $work/tty, the exit status in $code.
on_tty() {
  local answers=$1
  shift
  code=0
  : >"$work/tty"
  {
    local n=0
    while IFS= read -r line; do
      n=$((n + 1))
      for _ in $(seq 1 300); do
        [ "$(prompts)" -ge "$n" ] && break
        sleep 0.1
      done
      printf '%s\n' "$line"
    done <<<"$answers"
    sleep 1
  } | timeout 60 script -qec "$(printf '%q ' "$@")" /dev/null >>"$work/tty" 2>&1 || code=$?
}

# The protected key from local-up's home, re-protected by typing.
on_tty $'first secret\nfirst secret' "$bin/splitfs" key passwd
[ "$code" -eq 0 ] || fail "key passwd exited $code: $(cat "$work/tty")"
grep -q "New passphrase for the content key:" "$work/tty" || fail "no prompt: $(cat "$work/tty")"
if grep -q "first secret" "$work/tty"; then fail "the passphrase was echoed"; fi
grep -q "^splitfs-key-v1-scrypt:" "$SPLITFS_HOME/key" || fail "key not protected"
echo "key passwd on a terminal: asked twice, no echo"

head -c 5000 /dev/urandom >"$work/file"
on_tty $'first secret' "$bin/splitfs" store "$work/file"
[ "$code" -eq 0 ] || fail "store with the typed passphrase exited $code: $(cat "$work/tty")"
[ "$(grep -c "Passphrase of the splitfs key" "$work/tty")" -eq 1 ] || fail "asked more than once"

on_tty $'wrong secret' "$bin/splitfs" ls
[ "$code" -eq 7 ] || fail "wrong passphrase exited $code: $(cat "$work/tty")"
grep -q "wrong passphrase" "$work/tty" || fail "wrong passphrase message: $(cat "$work/tty")"
echo "typed passphrase opens the key once per command; a wrong one exits 7"

on_tty $'first secret\nexport secret\nanother secret' "$bin/splitfs" key export "$work/x.key"
[ "$code" -eq 7 ] || fail "mismatched confirmation exited $code"
grep -q "differ" "$work/tty" || fail "mismatch message: $(cat "$work/tty")"
[ ! -e "$work/x.key" ] || fail "an export was written despite the mismatch"
on_tty $'first secret\nexport secret\nexport secret' "$bin/splitfs" key export "$work/x.key"
[ "$code" -eq 0 ] || fail "export exited $code: $(cat "$work/tty")"
# grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
# then fails the pipeline under pipefail.
grep -n "Passphrase" "$work/tty" | head -1 | grep -c "Passphrase of the splitfs key" >/dev/null ||
  fail "export did not ask for the current passphrase first: $(cat "$work/tty")"
SPLITFS_PASSPHRASE="export secret" "$bin/splitfs" --home "$work/other" key import "$work/x.key" \
  >/dev/null
echo "export asks the current passphrase first and refuses a mismatched confirmation"
echo "security tty: all checks passed"
