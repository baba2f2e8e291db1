#!/usr/bin/env bash
# Store and fetch throughput of one large random file through the CLI against real local servers,
# the one-TLS-stream ceiling measured in the same run (median of three), each as a ratio to it,
# and the bytes each server keeps on disk.
#
#   bench/store_fetch.sh [SIZE_MIB]     (default 1024)
#   SPLITFS_BIN_DIR   the binaries (default build/bin)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${SPLITFS_BIN_DIR:-$root/build/bin}")
export SPLITFS_BIN_DIR=$bin
mib=${1:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/splitfs-bench.XXXXXX")
trap '"$root/scripts/local-down.sh" "$work/servers" >/dev/null 2>&1; rm -rf "$work"' EXIT
eval "$("$root/scripts/local-up.sh" "$work/servers" 2>/dev/null)"

bytes=$((mib * 1024 * 1024))
head -c "$bytes" /dev/urandom >"$work/input.bin"

now() { date +%s.%N; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

# The ceiling: one TLS 1.3 stream between two processes, 256 KiB writes, as bench/run.sh does.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/key.pem" \
  -out "$work/cert.pem" 2>/dev/null
tls_runs=()
for _ in 1 2 3; do
  line=$("$bin/bench_tls_stream" --cert "$work/cert.pem" --key "$work/key.pem" --bytes "$bytes" \
    --write-size 256K --json)
  tls_runs+=("$(echo "$line" | python3 -c 'import json, sys; print(json.load(sys.stdin)["mb_per_s"])')")
done
tls=$(printf '%s\n' "${tls_runs[@]}" | sort -g | sed -n 2p)

t0=$(now)
"$bin/splitfs" store "$work/input.bin" --as bench.bin >/dev/null
t1=$(now)
"$bin/splitfs" fetch bench.bin -o "$work/output.bin" >/dev/null
t2=$(now)
cmp "$work/input.bin" "$work/output.bin"

store=$(mbps "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
fetch=$(mbps "$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')")
ratio() { awk -v x="$1" -v t="$tls" 'BEGIN { printf "%.2f", x / t }'; }
echo "file:  $mib MiB of random data ($bytes bytes), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tls:   $tls MB/s (one TLS 1.3 stream; runs ${tls_runs[*]})"
echo "store: $store MB/s = $(ratio "$store")x the TLS stream"
echo "fetch: $fetch MB/s = $(ratio "$fetch")x the TLS stream"
for server in https tcp; do
  echo "on disk, $server server: $(du -sb "$work/servers/$server/store" | cut -f1) bytes"
done
