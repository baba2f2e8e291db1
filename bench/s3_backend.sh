#!/usr/bin/env bash
# Store and fetch throughput of one random file through the CLI with both servers on the S3
# backend (a single-node Swift with s3api, TLS, and a PostgreSQL index, started here), beside the
# same with local packs, and beside the ceiling of this backend: curl PUT and GET of the same bytes
# to the same Swift, one stream, and two streams at once (one half each, as the two servers do).
# Each run is the median of three.
#
#   bench/s3_backend.sh [SIZE_MIB]     (default 256)
#   SPLITFS_BIN_DIR            the binaries (default build/bin)
#   SPLITFS_BASELINE_BIN_DIR   optional: other server binaries (e.g. a copy of an earlier build)
#                              measured on the S3 backend in the same run, with the same client,
#                              Swift and PostgreSQL, to compare a change before and after
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${SPLITFS_BIN_DIR:-$root/build/bin}")
baseline=${SPLITFS_BASELINE_BIN_DIR:+$(realpath "$SPLITFS_BASELINE_BIN_DIR")}
mib=${1:-256}
work=$(mktemp -d "${TMPDIR:-/tmp}/splitfs-s3bench.XXXXXX")
chmod 755 "$work"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$root/scripts/swift-down.sh" "$work/swift" >/dev/null 2>&1 || true
  "$root/scripts/pg-down.sh" "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$root/scripts/swift-up.sh" "$work/swift" auto >/dev/null
"$root/scripts/pg-up.sh" "$work/pg" auto >/dev/null
set -a
. "$work/swift/env"
. "$work/pg/env"
set +a

bytes=$((mib * 1024 * 1024))
half=$((bytes / 2))
head -c "$bytes" /dev/urandom >"$work/input.bin"
head -c "$half" "$work/input.bin" >"$work/half1.bin"
tail -c "+$((half + 1))" "$work/input.bin" >"$work/half2.bin"

now() { date +%s.%N; }
mbps() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { print b - a }'; }

# The ceiling: curl against the same endpoint, same signing (tempauth's key holds a colon, so the
# credentials go through a netrc file rather than --user).
host=${SWIFT_S3_ENDPOINT#https://}
host=${host%%:*}
umask 077
printf 'machine %s login %s password %s\n' "$host" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" \
  >"$work/netrc"
umask 022
s3curl() {
  curl -sSf --cacert "$SWIFT_CA_FILE" --aws-sigv4 "aws:amz:us-east-1:s3" --netrc-file "$work/netrc" \
    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
s3curl -X PUT "$SWIFT_S3_ENDPOINT/rawbench" -o /dev/null
curl_put=() curl_get=() curl2_put=() curl2_get=()
for run in 1 2 3; do
  t0=$(now)
  s3curl -T "$work/input.bin" "$SWIFT_S3_ENDPOINT/rawbench/one$run" -o /dev/null
  t1=$(now)
  s3curl "$SWIFT_S3_ENDPOINT/rawbench/one$run" -o "$work/raw.out"
  t2=$(now)
  cmp "$work/input.bin" "$work/raw.out"
  curl_put+=("$(mbps "$(elapsed "$t0" "$t1")")")
  curl_get+=("$(mbps "$(elapsed "$t1" "$t2")")")
  t0=$(now)
  s3curl -T "$work/half1.bin" "$SWIFT_S3_ENDPOINT/rawbench/a$run" -o /dev/null &
  s3curl -T "$work/half2.bin" "$SWIFT_S3_ENDPOINT/rawbench/b$run" -o /dev/null
  wait
  t1=$(now)
  s3curl "$SWIFT_S3_ENDPOINT/rawbench/a$run" -o "$work/a.out" &
  s3curl "$SWIFT_S3_ENDPOINT/rawbench/b$run" -o "$work/b.out"
  wait
  t2=$(now)
  curl2_put+=("$(mbps "$(elapsed "$t0" "$t1")")")
  curl2_get+=("$(mbps "$(elapsed "$t1" "$t2")")")
done
rm -f "$work/raw.out" "$work/a.out" "$work/b.out"

# start NAME BINARY ARGS...: a server with data in $work/NAME, in the background; sets
# NAME_address and NAME_fingerprint. The servers come from $server_bin.
server_bin=$bin
start() {
  local name=$1 binary=$2
  shift 2
  "$server_bin/$binary" --data "$work/$name" --port 0 "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if grep -qs '^listening on ' "$work/$name.log"; then
      printf -v "${name}_address" '%s' "$(grep -m1 '^listening on ' "$work/$name.log" | awk '{print $3}')"
      printf -v "${name}_fingerprint" '%s' "$(grep -m1 '^listening on ' "$work/$name.log" | awk '{print $5}')"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start; see $work/$name.log" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# run KIND [SERVER ARGS...]: both servers, a client, three store/fetch rounds; prints "store fetch".
run() {
  local kind=$1
  shift
  local home="$work/$kind-client"
  local fingerprint
  fingerprint=$("$bin/splitfs" --home "$home" id)
  for door in https tcp; do
    "$server_bin/splitfs-$door-server" --data "$work/${kind}_$door" users add local "$fingerprint" >/dev/null
  done
  local extra_https=() extra_tcp=()
  if [ "$kind" != local ]; then
    extra_https=(--backend "s3://$kind-https?endpoint=$SWIFT_S3_ENDPOINT&ca=$SWIFT_CA_FILE"
      --index "$SPLITFS_PG_URL?schema=${kind}_https")
    extra_tcp=(--backend "s3://$kind-tcp?endpoint=$SWIFT_S3_ENDPOINT&ca=$SWIFT_CA_FILE"
      --index "$SPLITFS_PG_URL?schema=${kind}_tcp")
  fi
  start "${kind}_https" splitfs-https-server "${extra_https[@]}"
  start "${kind}_tcp" splitfs-tcp-server "${extra_tcp[@]}"
  local ha="${kind}_https_address" hf="${kind}_https_fingerprint"
  local ta="${kind}_tcp_address" tf="${kind}_tcp_fingerprint"
  "$bin/splitfs" --home "$home" init --force --https "${!ha}" --https-fingerprint "${!hf}" \
    --tcp "${!ta}" --tcp-fingerprint "${!tf}" >/dev/null
  local stores=() fetches=()
  for round in 1 2 3; do
    t0=$(now)
    SPLITFS_HOME=$home "$bin/splitfs" store "$work/input.bin" --as "bench$round.bin" >/dev/null
    t1=$(now)
    SPLITFS_HOME=$home "$bin/splitfs" fetch "bench$round.bin" -o "$work/output.bin" >/dev/null
    t2=$(now)
    cmp "$work/input.bin" "$work/output.bin"
    rm -f "$work/output.bin"
    stores+=("$(mbps "$(elapsed "$t0" "$t1")")")
    fetches+=("$(mbps "$(elapsed "$t1" "$t2")")")
  done
  echo "$(median "${stores[@]}") $(median "${fetches[@]}")"
}

# Not in a subshell: the servers' PIDs must reach the cleanup.
run local >"$work/local.result"
run s3 >"$work/s3.result"
if [ -n "$baseline" ]; then
  server_bin=$baseline
  run s3base >"$work/s3base.result"
  server_bin=$bin
fi
read -r local_store local_fetch <"$work/local.result"
read -r s3_store s3_fetch <"$work/s3.result"

ratio() { awk -v x="$1" -v t="$2" 'BEGIN { printf "%.2f", x / t }'; }
cp1=$(median "${curl_put[@]}")
cg1=$(median "${curl_get[@]}")
cp2=$(median "${curl2_put[@]}")
cg2=$(median "${curl2_get[@]}")
echo "file:              $mib MiB of random data, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "curl, one stream:  PUT $cp1 MB/s, GET $cg1 MB/s (runs ${curl_put[*]} / ${curl_get[*]})"
echo "curl, two streams: PUT $cp2 MB/s, GET $cg2 MB/s (runs ${curl2_put[*]} / ${curl2_get[*]})"
echo "local packs:       store $local_store MB/s, fetch $local_fetch MB/s"
echo "S3 backend:        store $s3_store MB/s = $(ratio "$s3_store" "$cp1")x curl PUT" \
  "($(ratio "$s3_store" "$cp2")x two streams), fetch $s3_fetch MB/s = $(ratio "$s3_fetch" "$cg1")x" \
  "curl GET ($(ratio "$s3_fetch" "$cg2")x two streams)"
if [ -n "$baseline" ]; then
  read -r base_store base_fetch <"$work/s3base.result"
  echo "S3, baseline:      store $base_store MB/s = $(ratio "$base_store" "$cp1")x curl PUT," \
    "fetch $base_fetch MB/s = $(ratio "$base_fetch" "$cg1")x curl GET (servers from $baseline)"
fi
