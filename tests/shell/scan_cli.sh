#!/usr/bin/env bash
# The malware check from the command line, against real servers started by scripts/local-up.sh:
# blocked stores exit 10 and leave the servers as they were (`splitfs df` before and after), a
# blocked fetch leaves no file, suspicious files pass with a warning, clean ones silently,
# --no-scan says what it does, `splitfs scan` gives verdicts without storing, and
# `splitfs quarantine list` shows what was kept. Every sample is built here, by python3; the
# EICAR string is assembled from pieces.
set -euo pipefail
root=${SPLITFS_SOURCE_DIR:?}
bin=${SPLITFS_BIN_DIR:?}
work=$(mktemp -d /tmp/splitfs-scan.XXXXXX)
trap '"$root/scripts/local-down.sh" "$work/servers"; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"
splitfs() { "$bin/splitfs" "$@"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

in=$work/in
mkdir -p "$in" "$work/out" "$work/rules" "$work/clamav"
python3 - "$in" <<'EOF'
import gzip, io, os, random, sys, tarfile, zipfile
d = sys.argv[1]
eicar = ("X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS" + "-TEST-FILE!$H+H*").encode()
def put(name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
def zipped(members):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
    return out.getvalue()
text = b"".join(b"line %d of the minutes\n" % i for i in range(5000))
put("eicar.com", eicar)
put("eicar.zip", zipped([("eicar.com", eicar)]))
put("eicar-zip-in-zip.zip", zipped([("inner.zip", zipped([("eicar.com", eicar)]))]))
tgz = io.BytesIO()
with tarfile.open(fileobj=tgz, mode="w:gz") as t:
    for name, data in [("docs/readme.txt", text), ("docs/eicar.com", eicar)]:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
put("eicar.tar.gz", tgz.getvalue())
put("report.pdf", b"\x7fELF\x02\x01\x01" + bytes(505))
put("holiday.jpg", b"MZ" + bytes(0x3a) + b"\x80\x00\x00\x00" + bytes(0x40) + b"PE\x00\x00" + bytes(100))
put("bomb.zip", zipped([("zeros.bin", bytes(32 << 20))]))
put("bomb.gz", gzip.compress(bytes(32 << 20)))
deep = zipped([("note.txt", b"the bottom\n")])
for level in range(9):
    deep = zipped([("level%d.zip" % level, deep)])
put("deep.zip", deep)
put("invoice.docm", zipped([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"),
                             ("word/vbaProject.bin", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1000))]))
put("notes.txt", text)
put("paper.pdf", b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n")
put("texts.zip", zipped([("a.txt", text), ("b/c.txt", text * 3)]))
random.seed(7)
put("noise.bin", bytes(random.getrandbits(8) for _ in range(1 << 20)))
marker = "SPLITFS" + "-TEST-" + "MARKER-7f3a"
put("marked.txt", ("minutes\n" + marker + "\nend\n").encode())
random.seed(99)
put("hashed.bin", bytes(random.getrandbits(8) for _ in range(70000)))
pattern = "splitfs" + "-clamav-" + "pattern-c0ffee"
put("carrier.bin", bytes(1000) + pattern.encode() + bytes(1000))
EOF
cp "$(command -v ls)" "$in/tool.bin"  # a real ELF under a name that promises nothing

# The test's own YARA rule and ClamAV signatures (the official databases cannot be downloaded).
marker=$(printf '%s' SPLITFS -TEST- MARKER-7f3a)
printf 'rule test_marker {\n  strings:\n    $m = "%s"\n  condition:\n    $m\n}\n' "$marker" \
  >"$work/rules/marker.yar"
echo "$(md5sum <"$in/hashed.bin" | cut -d' ' -f1):$(stat -c %s "$in/hashed.bin"):Splitfs.Test.Hash" \
  >"$work/clamav/test.hdb"
echo "Splitfs.Test.Pattern:0:*:$(printf '%s' splitfs -clamav- pattern-c0ffee | od -An -tx1 | tr -d ' \n')" \
  >"$work/clamav/test.ndb"
cat >>"$SPLITFS_HOME/config.toml" <<EOF

[scan]
yara_rules = ["$work/rules"]
clamav_database = "$work/clamav"
EOF

# Clean files of every kind: stored and fetched without a word on stderr.
for f in notes.txt paper.pdf texts.zip noise.bin tool.bin; do
  splitfs store "$in/$f" >/dev/null 2>"$work/err" || fail "store of clean $f: $(cat "$work/err")"
  [ -s "$work/err" ] && fail "store of clean $f wrote to stderr: $(cat "$work/err")"
  splitfs fetch "$f" -o "$work/out/" >/dev/null 2>"$work/err" || fail "fetch of clean $f"
  [ -s "$work/err" ] && fail "fetch of clean $f wrote to stderr: $(cat "$work/err")"
  cmp "$in/$f" "$work/out/$f" || fail "content of $f"
done
echo "clean files: stored and fetched without a warning"

# Blocked: exit 10, nothing on either server.
listing=$(splitfs ls)
usage=$(splitfs df)
blocked=(eicar.com eicar.zip eicar-zip-in-zip.zip eicar.tar.gz report.pdf holiday.jpg bomb.zip bomb.gz
  deep.zip marked.txt hashed.bin carrier.bin)
for f in "${blocked[@]}"; do
  set +e
  splitfs store "$in/$f" >/dev/null 2>"$work/err"
  status=$?
  set -e
  [ "$status" = 10 ] || fail "store of $f exited $status, not 10: $(cat "$work/err")"
  grep -q "refused to store $in/$f: malicious" "$work/err" || fail "message for $f: $(cat "$work/err")"
  grep -q "a copy is kept in quarantine: $SPLITFS_HOME/quarantine/" "$work/err" ||
    fail "no quarantine path for $f: $(cat "$work/err")"
  echo "  $f: $(sed -e 's/.*: malicious: //' -e 's/ - .*//' "$work/err")"
done
[ "$(splitfs ls)" = "$listing" ] || fail "ls changed after blocked stores"
[ "$(splitfs df)" = "$usage" ] || fail "the servers' counts changed after blocked stores"
echo "blocked stores: exit 10, the servers' listing and counts unchanged"

# Suspicious: stored, with a warning.
splitfs store "$in/invoice.docm" >/dev/null 2>"$work/err" || fail "store of invoice.docm"
grep -q "warning: .*invoice.docm: suspicious: heuristics office.vba-macros" "$work/err" ||
  fail "no warning for invoice.docm: $(cat "$work/err")"
echo "suspicious files: stored with a warning"

# --no-scan is explicit and says so; the fetch checks the file again.
splitfs store --no-scan "$in/eicar.zip" >/dev/null 2>"$work/err" || fail "store --no-scan"
grep -q "warning: --no-scan: $in/eicar.zip is stored without a malware check" "$work/err" ||
  fail "--no-scan said nothing: $(cat "$work/err")"
mkdir "$work/fetched"
set +e
splitfs fetch eicar.zip -o "$work/fetched/" >/dev/null 2>"$work/err"
status=$?
set -e
[ "$status" = 10 ] || fail "fetch of eicar.zip exited $status: $(cat "$work/err")"
[ -z "$(ls -A "$work/fetched")" ] || fail "a blocked fetch left files: $(ls -A "$work/fetched")"
splitfs fetch --no-scan eicar.zip -o "$work/fetched/" >/dev/null 2>/dev/null || fail "fetch --no-scan"
cmp "$in/eicar.zip" "$work/fetched/eicar.zip" || fail "fetch --no-scan content"
echo "--no-scan: stored and fetched with a warning line; a checked fetch is blocked, leaving nothing"

# Verdicts without storing.
set +e
splitfs scan "$in"/* >"$work/verdicts" 2>/dev/null
status=$?
set -e
[ "$status" = 10 ] || fail "scan exited $status"
for f in "${blocked[@]}"; do
  grep -q "^$in/$f: malicious, blocked\$" "$work/verdicts" || fail "scan verdict of $f"
done
grep -q "^$in/invoice.docm: suspicious, let through with a warning\$" "$work/verdicts" ||
  fail "scan verdict of invoice.docm"
for f in notes.txt paper.pdf texts.zip noise.bin tool.bin; do
  grep -q "^$in/$f: clean\$" "$work/verdicts" || fail "scan verdict of $f"
done
splitfs scan "$in/notes.txt" >/dev/null 2>&1 || fail "scan of a clean file exits non-zero"
splitfs scan --json "$in/eicar.tar.gz" >"$work/verdict.json" 2>/dev/null && fail "scan --json exit"
python3 -c '
import json, sys
[v] = json.load(sys.stdin)
assert v["verdict"] == "malicious" and v["action"] == "block", v
assert v["findings"][0]["where"] == "eicar.tar.gz/docs/eicar.com", v' <"$work/verdict.json" ||
  fail "scan --json"
echo "scan: verdicts for every sample, exit 10 when one would be blocked"

# The quarantine: one entry per blocked file, newest first, bytes kept read-only.
splitfs quarantine list >"$work/quarantine"
grep -q "fetch  malicious  heuristics eicar  eicar.zip" "$work/quarantine" ||
  fail "quarantine list lacks the blocked fetch: $(cat "$work/quarantine")"
splitfs quarantine list --json | python3 -c '
import json, os, sys
entries = json.load(sys.stdin)
assert len(entries) == int(sys.argv[1]) + 1, len(entries)
for e in entries:
    assert os.path.isfile(e["data"]) and e["size"] == os.path.getsize(e["data"]), e
    assert (os.stat(e["data"]).st_mode & 0o777) == 0o400, e
' "${#blocked[@]}" || fail "quarantine list --json"
echo "quarantine list: $(grep -c '^[0-9]' "$work/quarantine") entries"
echo "OK"
