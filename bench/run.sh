#!/usr/bin/env bash
# The benchmark of issue 8: our mount against its ceilings (one TLS 1.3 stream between two
# processes; a minimal FUSE passthrough of our own) and, with --peers, against rclone crypt mount
# over HTTPS WebDAV and sshfs, all measured in one run on this machine. Prints a table and writes
# the same figures as JSON (bench/results/<date>.json unless --out PATH).
#
#   bench/run.sh [--peers] [--out PATH]          (or: make bench, make bench ARGS=--peers)
#
# Environment (sizes take K/M/G suffixes):
#   BENCH_BYTES        the large file (default 1G)
#   BENCH_FILES        how many small files (default 2000), BENCH_FILE_BYTES their size (4K)
#   BENCH_RSS_BYTES    the file of the mount's memory probe (default 8G; 0 skips the probe)
#   BENCH_FIO_SECONDS  the warm random-read run (default 10)
#   BENCH_FIO_COLD_IOS random reads of the cold run (default 4096, at most 30 s)
#   BENCH_MOUNT_OPTIONS  extra -o options for our mount (default none: what a user gets)
#   BENCH_TMPDIR       where the data and the servers go (default $TMPDIR or /tmp)
#   BENCH_KEEP=1       keep the work folder (logs, stats) instead of deleting it
#   SPLITFS_BIN_DIR    the binaries (default build/bin)
#
# What each figure means:
#   cp      `cp` of the large file into the mount, fsync of it (`sync FILE`), for rclone until its
#           WebDAV server holds every byte, then the unmount: MB/s until the unmount completed
#           (the durable point whatever a close or fsync promises); also until cp returned and
#           until the fsync (and rclone's upload) returned.
#   cat     `cat` of it to /dev/null on a fresh mount (cold), then again (warm).
#   store / fetch   `splitfs store` / `splitfs fetch` of the same file (fresh servers, so nothing
#           is deduplicated against the mount's copy).
#   small in        `cp -r` of the small files, fsync of the folder, then until durable: the
#           passthrough fsyncs every backing file, rclone waits until its server holds every
#           byte; then the unmount. Files per second until the unmount completed; also until cp
#           returned and until the fsyncs returned.
#   small out       `cat` of every small file on a fresh mount, files per second.
#   ls -l   `ls -l` of the small-file folder on a fresh mount, seconds.
#   fio     4 KiB random reads (psync, one job) over the large file: cold on a fresh mount
#           (BENCH_FIO_COLD_IOS reads), warm after two full reads (BENCH_FIO_SECONDS).
#   RSS     peak resident memory (VmHWM) of each mount process and each server over the run;
#           ours also over the memory probe (BENCH_RSS_BYTES written and read back).
#   disk    bytes the storage side holds after the run (our servers after a clean stop).
# Every peer runs on loopback with its data under the work folder; the machine's load average is
# printed at the start and the end, since only ratios measured in one run mean anything.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPLITFS_BIN_DIR:-$root/build/bin}
bin=$(realpath "$bin")
export SPLITFS_BIN_DIR=$bin
peers=0
out=
while [ $# -gt 0 ]; do
  case $1 in
    --peers) peers=1; shift ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: $0 [--peers] [--out PATH]" >&2; exit 2 ;;
  esac
done

size() { numfmt --from=iec "$1"; }
bytes=$(size "${BENCH_BYTES:-1G}")
files=${BENCH_FILES:-2000}
file_bytes=$(size "${BENCH_FILE_BYTES:-4K}")
rss_bytes=$(size "${BENCH_RSS_BYTES:-8G}")
fio_seconds=${BENCH_FIO_SECONDS:-10}
fio_cold_ios=${BENCH_FIO_COLD_IOS:-4096}
tmp=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
stamp=$(date +%Y-%m-%dT%H%M%S)
out=${out:-$root/bench/results/$stamp.json}

for b in splitfs splitfs-https-server splitfs-tcp-server bench_tls_stream bench_passthrough; do
  if [ ! -x "$bin/$b" ]; then
    echo "bench: $bin/$b is missing; build it first (make bench builds everything)" >&2
    exit 1
  fi
done
if [ ! -w /dev/fuse ]; then
  echo "bench: /dev/fuse is not writable by this user; FUSE mounts need it" >&2
  exit 1
fi

# ---- packages: fio always, the peers with --peers (Debian's own packages) ----
need=()
command -v fio >/dev/null || need+=(fio)
if [ "$peers" = 1 ]; then
  command -v rclone >/dev/null || need+=(rclone)
  command -v sshfs >/dev/null || need+=(sshfs)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null
fi

# ---- free space: the source data, then the largest phase (servers + what they are fed from) ----
small_total=$((files * file_bytes))
largest=$((2 * bytes + 2 * small_total))
if [ "$rss_bytes" -gt 0 ] && [ $((2 * rss_bytes)) -gt "$largest" ]; then
  largest=$((2 * rss_bytes))
fi
needed=$(((bytes + small_total + largest) * 11 / 10))
mkdir -p "$tmp"
free=$(($(df -Pk "$tmp" | awk 'NR == 2 { print $4 }') * 1024))
gib() { awk -v b="$1" 'BEGIN { printf "%.1f GiB", b / 1073741824 }'; }
echo "bench: $(gib "$free") free under $tmp, about $(gib "$needed") needed" >&2
if [ "$free" -lt "$needed" ] && [ "$rss_bytes" -gt 0 ]; then
  echo "bench: not enough room for the $(gib "$rss_bytes") memory probe: skipping it" \
    "(BENCH_RSS_BYTES=0)" >&2
  rss_bytes=0
  needed=$(((bytes + small_total + 2 * bytes + 2 * small_total) * 11 / 10))
fi
if [ "$free" -lt "$needed" ]; then
  echo "bench: not enough free space under $tmp: $(gib "$free") free, $(gib "$needed") needed;" \
    "set BENCH_TMPDIR or a smaller BENCH_BYTES" >&2
  exit 1
fi

work=$(mktemp -d "$tmp/splitfs-bench.XXXXXX")
results=$work/results.txt
: >"$results"
mnt=$work/mnt
mkdir -p "$mnt"
bg_pids=()   # background processes this script started (samplers, peers' servers, mounts)
servers=()   # server folders started with local-up.sh

cleanup() {
  set +e
  if grep -q " $mnt " /proc/self/mounts 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" 2>/dev/null
  fi
  for s in "${servers[@]}"; do "$root/scripts/local-down.sh" "$s" >/dev/null 2>&1; done
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: work folder kept: $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { echo "$1 $2" >>"$results"; }
say() { echo "bench: $*" >&2; }
now_ns() { date +%s%N; }
elapsed_ns=0
# timed CMD...: runs it, leaves its duration in elapsed_ns.
timed() {
  local t0
  t0=$(now_ns)
  "$@"
  elapsed_ns=$(($(now_ns) - t0))
}
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f", b / (ns / 1e9) / 1e6 }'; }
per_s() { awk -v n="$1" -v ns="$2" 'BEGIN { printf "%.1f", n / (ns / 1e9) }'; }
seconds() { awk -v ns="$1" 'BEGIN { printf "%.4f", ns / 1e9 }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECONDS CMD...: polls CMD every 50 ms, fails after SECONDS.
wait_until() {
  local limit=$1
  shift
  local deadline=$(($(date +%s) + limit))
  until "$@"; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.05
  done
}
mounted() { grep -q " $1 " /proc/self/mounts; }
not_mounted() { ! mounted "$1"; }
gone() { ! kill -0 "$1" 2>/dev/null; }

# hwm_watch PID FILE: keeps the process's peak resident set (VmHWM, KiB) in FILE until it exits.
hwm_watch() {
  (
    while [ -r "/proc/$1/status" ]; do
      v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true)
      [ -n "$v" ] && echo "$v" >"$2"
      sleep 0.2
    done
  ) &
  bg_pids+=($!)
}
# hwm_max GLOB: the largest value in the files, in MB (10^6 bytes); 0 if none.
hwm_max() {
  cat $1 2>/dev/null | awk 'BEGIN { m = 0 } $1 > m { m = $1 } END { printf "%.1f", m * 1024 / 1e6 }'
}

# ---- the data ----
say "generating $(gib "$bytes") of random data and $files files of $file_bytes bytes"
src=$work/src
mkdir -p "$src/small"
head -c "$bytes" /dev/urandom >"$src/big.bin"
head -c "$small_total" /dev/urandom | (cd "$src/small" && split -d -a 6 -b "$file_bytes" - f)

# One self-signed certificate for localhost and 127.0.0.1: the TLS ceiling and rclone's WebDAV.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/key.pem" \
  -out "$work/cert.pem" 2>/dev/null

record meta.date "$stamp"
record meta.host "$(hostname)"
record meta.cpus "$(nproc)"
record meta.cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo | tr ' ' '_')"
record meta.kernel "$(uname -r)"
record meta.load_start "$(loadavg | tr ' ' ',')"
record meta.bytes "$bytes"
record meta.files "$files"
record meta.file_bytes "$file_bytes"
record meta.rss_bytes "$rss_bytes"
record meta.peers "$peers"
record meta.fio "$(fio --version)"
if [ "$peers" = 1 ]; then
  record rclone.version "$(rclone version 2>/dev/null | awk 'NR == 1 { print $2 }')"
  record sshfs.version "$(sshfs --version 2>&1 | awk '/^SSHFS version/ { print $3 }')"
fi
record meta.mount_options "${BENCH_MOUNT_OPTIONS:-none}"
record meta.commit "$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
record meta.uncommitted_files "$(git -C "$root" status --porcelain 2>/dev/null | wc -l)"
say "load average at the start: $(loadavg)"

# ---- the TLS ceiling: median of three 1-stream runs ----
say "TLS stream ceiling"
tls_runs=()
for _ in 1 2 3; do
  line=$("$bin/bench_tls_stream" --cert "$work/cert.pem" --key "$work/key.pem" --bytes "$bytes" \
    --write-size 256K --json)
  tls_runs+=("$(echo "$line" | python3 -c 'import json, sys; print(json.load(sys.stdin)["mb_per_s"])')")
  cipher=$(echo "$line" | python3 -c 'import json, sys; print(json.load(sys.stdin)["cipher"])')
done
record tls.mbps "$(printf '%s\n' "${tls_runs[@]}" | sort -g | sed -n 2p)"
record tls.runs "$(IFS=,; echo "${tls_runs[*]}")"
record tls.cipher "$cipher"

# ---- the file systems under test: NAME_mount, NAME_umount, NAME_settle, NAME_pid ----
pid=
# Ours.
ours_home=
ours_mount() {
  local extra=()
  if [ -n "${BENCH_MOUNT_OPTIONS:-}" ]; then extra=(-o "$BENCH_MOUNT_OPTIONS"); fi
  "$bin/splitfs" --home "$ours_home" mount "$mnt" "${extra[@]}" >>"$work/ours-mount.out" 2>&1
  pid=$(awk '/^pid: / { print $2 }' "$mnt/.splitfs/stats")
}
ours_umount() {
  cp "$mnt/.splitfs/stats" "$work/ours-stats.$(now_ns)" 2>/dev/null || true
  "$bin/splitfs" --home "$ours_home" umount "$mnt" --timeout 900
}
ours_settle() { :; }

# The passthrough, over a backing folder.
pt_back=$work/passthrough
pt_mount() {
  mkdir -p "$pt_back"
  "$bin/bench_passthrough" "$pt_back" "$mnt" -f 2>>"$work/passthrough.log" &
  pid=$!
  bg_pids+=("$pid")
  wait_until 30 mounted "$mnt"
}
fg_umount() {
  fusermount3 -u "$mnt"
  wait_until 300 gone "$pid"
}
pt_umount() { fg_umount; }
pt_settle() {
  if [ "$1" = small ]; then
    find "$pt_back/small" -type f -exec sync {} +
    sync "$pt_back/small"
  fi
}

# rclone crypt mount over `rclone serve webdav` with TLS, on loopback.
rc_dir=$work/rclone
rc_mount() {
  rm -rf "$rc_dir/cache"
  rc_base=$(dav_bytes) # what the server held before: a phase's upload is counted from there
  rclone mount sec: "$mnt" --config "$rc_dir/rclone.conf" --ca-cert "$work/cert.pem" \
    --vfs-cache-mode writes --vfs-write-back 0s --cache-dir "$rc_dir/cache" \
    --log-file "$rc_dir/mount.log" &
  pid=$!
  bg_pids+=("$pid")
  wait_until 60 mounted "$mnt"
}
rc_umount() { fg_umount; }
# The server holds every byte once the crypt files under its folder add up to what was written
# (rclone crypt: a 32-byte header and 16 bytes per 64 KiB block on top of the data).
crypt_size() { echo $(($1 + 32 + 16 * (($1 + 65535) / 65536))); }
dav_bytes() { find "$rc_dir/dav" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }
dav_holds() { [ "$(dav_bytes)" -ge "$1" ]; }
rc_settle() {
  local expected
  if [ "$1" = big ]; then
    expected=$((rc_base + $(crypt_size "$bytes")))
  else
    expected=$((rc_base + files * $(crypt_size "$file_bytes")))
  fi
  wait_until 1800 dav_holds "$expected"
}
rc_base=0

# sshfs to our own sshd on loopback.
ssh_dir=$work/ssh
ssh_port=
ssh_mount() {
  sshfs -f "root@127.0.0.1:$ssh_dir/remote" "$mnt" -p "$ssh_port" -o \
    "IdentityFile=$ssh_dir/id_key,UserKnownHostsFile=$ssh_dir/known_hosts,StrictHostKeyChecking=yes,BatchMode=yes" \
    2>>"$ssh_dir/sshfs.log" &
  pid=$!
  bg_pids+=("$pid")
  wait_until 30 mounted "$mnt"
}
ssh_umount() { fg_umount; }
ssh_settle() { :; }

fio_run() {
  local name=$1 kind=$2
  shift 2
  fio --name="$name-$kind" --filename="$mnt/big.bin" --size="$bytes" --rw=randread --bs=4k \
    --ioengine=psync --numjobs=1 --invalidate=0 --allow_file_create=0 --output-format=json \
    "$@" >"$work/fio-$name-$kind.json"
  python3 -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"], 1))' \
    "$work/fio-$name-$kind.json"
}

# workloads NAME PREFIX: every workload against one file system, each phase on a fresh mount.
workloads() {
  local name=$1 p=$2 n=0
  local hwm=$work/hwm-$name
  up() {
    "${p}_mount"
    n=$((n + 1))
    hwm_watch "$pid" "$hwm.$n"
  }
  down() { "${p}_umount"; }

  say "$name: cp $(gib "$bytes") in"
  up
  if [ "$name" = ours ]; then
    record ours.cache_budget_mb "$(awk '/^cache_capacity: / { printf "%.1f", $2 / 1e6 }' \
      "$mnt/.splitfs/stats")"
  fi
  local t0 t1 t2
  t0=$(now_ns)
  cp "$src/big.bin" "$mnt/big.bin"
  t1=$(now_ns)
  sync "$mnt/big.bin"
  "${p}_settle" big
  t2=$(now_ns)
  down
  record "$name.cp_mbps" "$(mbps "$bytes" $(($(now_ns) - t0)))"
  record "$name.cp_fsync_mbps" "$(mbps "$bytes" $((t2 - t0)))"
  record "$name.cp_return_mbps" "$(mbps "$bytes" $((t1 - t0)))"

  say "$name: cat out, cold then warm; fio warm"
  up
  timed cat "$mnt/big.bin" >/dev/null
  record "$name.cat_cold_mbps" "$(mbps "$bytes" "$elapsed_ns")"
  timed cat "$mnt/big.bin" >/dev/null
  record "$name.cat_warm_mbps" "$(mbps "$bytes" "$elapsed_ns")"
  record "$name.fio_warm_iops" "$(fio_run "$name" warm --time_based --runtime="$fio_seconds")"
  if ! cmp -s "$src/big.bin" "$mnt/big.bin"; then
    say "$name: the large file read back differs from what was written"
    record "$name.big_mismatch" 1
  fi
  down

  say "$name: fio cold"
  up
  record "$name.fio_cold_iops" "$(fio_run "$name" cold --number_ios="$fio_cold_ios" --runtime=30)"
  down

  say "$name: $files small files in"
  up
  t0=$(now_ns)
  cp -r "$src/small" "$mnt/small"
  t1=$(now_ns)
  sync "$mnt/small"
  "${p}_settle" small
  t2=$(now_ns)
  down
  record "$name.small_in_fps" "$(per_s "$files" $(($(now_ns) - t0)))"
  record "$name.small_in_fsync_fps" "$(per_s "$files" $((t2 - t0)))"
  record "$name.small_in_return_fps" "$(per_s "$files" $((t1 - t0)))"

  say "$name: ls -l, then the small files out"
  up
  local listed
  timed eval 'listed=$(ls -l "$mnt/small" | wc -l)'
  record "$name.ls_seconds" "$(seconds "$elapsed_ns")"
  if [ "$listed" -ne $((files + 1)) ]; then
    say "$name: ls -l listed $((listed - 1)) files, not $files"
    record "$name.small_mismatch" 1
  fi
  down
  up
  timed eval 'find "$mnt/small" -type f -exec cat {} + >"$work/small-out.bin"'
  record "$name.small_out_fps" "$(per_s "$files" "$elapsed_ns")"
  if [ "$(stat -c %s "$work/small-out.bin")" -ne "$small_total" ]; then
    say "$name: the small files read back do not add up to what was written"
    record "$name.small_mismatch" 1
  fi
  rm -f "$work/small-out.bin"
  down
  sleep 0.5 # the samplers' last look
  record "$name.rss_mb" "$(hwm_max "$hwm.*")"
  # Each phase's mount on its own: cp, cat + fio warm, fio cold, small in, ls -l, small out.
  local i per=()
  for i in $(seq 1 "$n"); do per+=("$(hwm_max "$hwm.$i")"); done
  record "$name.rss_phases_mb" "$(IFS=,; echo "${per[*]}")"
}

# ---- the passthrough ----
workloads passthrough pt
record passthrough.disk_bytes "$(du -sb "$pt_back" | cut -f1)"
rm -rf "$pt_back"

# ---- splitfs store / fetch, on servers of their own ----
say "ours: splitfs store / fetch"
sf=$work/servers-store
servers+=("$sf")
eval "$("$root/scripts/local-up.sh" "$sf" 2>/dev/null)"
hwm_watch "$(cat "$sf/https.pid")" "$work/hwm-https.0"
hwm_watch "$(cat "$sf/tcp.pid")" "$work/hwm-tcp.0"
timed "$bin/splitfs" store "$src/big.bin" --as big-store.bin >/dev/null
record ours.store_mbps "$(mbps "$bytes" "$elapsed_ns")"
timed "$bin/splitfs" fetch big-store.bin -o "$work/fetched.bin" >/dev/null
record ours.fetch_mbps "$(mbps "$bytes" "$elapsed_ns")"
if ! cmp -s "$src/big.bin" "$work/fetched.bin"; then
  say "ours: the fetched file differs from the stored one"
  record ours.fetch_mismatch 1
fi
rm -f "$work/fetched.bin"
"$root/scripts/local-down.sh" "$sf" >/dev/null
rm -rf "$sf"

# ---- our mount ----
so=$work/servers
servers+=("$so")
eval "$("$root/scripts/local-up.sh" "$so" 2>/dev/null)"
ours_home=$SPLITFS_HOME
hwm_watch "$(cat "$so/https.pid")" "$work/hwm-https.1"
hwm_watch "$(cat "$so/tcp.pid")" "$work/hwm-tcp.1"
workloads ours ours
cp "$ours_home/mount.log" "$work/ours-mount.log" 2>/dev/null || true
"$root/scripts/local-down.sh" "$so" >/dev/null
record ours.disk_bytes "$(du -sb "$so/https/store" "$so/tcp/store" | awk '{ s += $1 } END { print s }')"
record ours.disk_https_bytes "$(du -sb "$so/https/store" | cut -f1)"
record ours.disk_tcp_bytes "$(du -sb "$so/tcp/store" | cut -f1)"
rm -rf "$so"

# ---- the mount's memory with a large file: written, then read back on a fresh mount ----
if [ "$rss_bytes" -gt 0 ]; then
  say "ours: memory probe, $(gib "$rss_bytes") written and read back"
  sp=$work/servers-probe
  servers+=("$sp")
  eval "$("$root/scripts/local-up.sh" "$sp" 2>/dev/null)"
  ours_home=$SPLITFS_HOME
  hwm_watch "$(cat "$sp/https.pid")" "$work/hwm-https.2"
  hwm_watch "$(cat "$sp/tcp.pid")" "$work/hwm-tcp.2"
  ours_mount
  hwm_watch "$pid" "$work/hwm-probe.1"
  # AES-CTR of zeros: incompressible and far faster than /dev/urandom.
  t0=$(now_ns)
  # (openssl ends on SIGPIPE once head has its bytes, which is expected.)
  { openssl enc -aes-128-ctr -nosalt -pass pass:splitfs-bench -in /dev/zero 2>/dev/null || true; } |
    head -c "$rss_bytes" | dd of="$mnt/huge.bin" bs=1M iflag=fullblock conv=fsync status=none
  record ours.probe_cp_mbps "$(mbps "$rss_bytes" $(($(now_ns) - t0)))"
  ours_umount
  ours_mount
  hwm_watch "$pid" "$work/hwm-probe.2"
  timed cat "$mnt/huge.bin" >/dev/null
  record ours.probe_cat_cold_mbps "$(mbps "$rss_bytes" "$elapsed_ns")"
  ours_umount
  "$root/scripts/local-down.sh" "$sp" >/dev/null
  sleep 0.5 # the samplers' last look
  record ours.probe_rss_mb "$(hwm_max "$work/hwm-probe.*")"
  record ours.probe_rss_phases_mb "$(hwm_max "$work/hwm-probe.1"),$(hwm_max "$work/hwm-probe.2")"
  rm -rf "$sp"
fi
record ours.https_rss_mb "$(hwm_max "$work/hwm-https.*")"
record ours.tcp_rss_mb "$(hwm_max "$work/hwm-tcp.*")"

# ---- the peers ----
if [ "$peers" = 1 ]; then
  say "rclone: serve webdav over TLS, crypt remote, mount"
  mkdir -p "$rc_dir/dav"
  dav_port=$(free_port)
  dav_pass=$(openssl rand -hex 16)
  rclone serve webdav "$rc_dir/dav" --addr "127.0.0.1:$dav_port" --cert "$work/cert.pem" \
    --key "$work/key.pem" --user bench --pass "$dav_pass" --log-file "$rc_dir/serve.log" &
  rc_serve_pid=$!
  bg_pids+=("$rc_serve_pid")
  hwm_watch "$rc_serve_pid" "$work/hwm-rcserve.1"
  cat >"$rc_dir/rclone.conf" <<EOF
[dav]
type = webdav
url = https://127.0.0.1:$dav_port/
vendor = other
user = bench
pass = $(rclone obscure "$dav_pass")

[sec]
type = crypt
remote = dav:crypt
password = $(rclone obscure "$(openssl rand -hex 16)")
password2 = $(rclone obscure "$(openssl rand -hex 16)")
EOF
  chmod 600 "$rc_dir/rclone.conf"
  wait_until 30 rclone --config "$rc_dir/rclone.conf" --ca-cert "$work/cert.pem" lsd dav: \
    >/dev/null 2>&1
  workloads rclone rc
  record rclone.disk_bytes "$(du -sb "$rc_dir/dav" | cut -f1)"
  record rclone.serve_rss_mb "$(hwm_max "$work/hwm-rcserve.*")"
  kill "$rc_serve_pid" 2>/dev/null || true
  wait_until 30 gone "$rc_serve_pid"
  rm -rf "$rc_dir"

  say "sshfs: sshd on loopback with its own key and config"
  mkdir -p "$ssh_dir/remote" /run/sshd
  ssh_port=$(free_port)
  ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$ssh_dir/id_key"
  cp "$ssh_dir/id_key.pub" "$ssh_dir/authorized_keys"
  echo "[127.0.0.1]:$ssh_port $(cut -d' ' -f1,2 "$ssh_dir/host_key.pub")" >"$ssh_dir/known_hosts"
  cat >"$ssh_dir/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $ssh_dir/host_key
PidFile $ssh_dir/sshd.pid
AuthorizedKeysFile $ssh_dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  /usr/sbin/sshd -D -e -f "$ssh_dir/sshd_config" 2>"$ssh_dir/sshd.log" &
  sshd_pid=$!
  bg_pids+=("$sshd_pid")
  ssh_ready() {
    ssh -n -T -p "$ssh_port" -i "$ssh_dir/id_key" -o "UserKnownHostsFile=$ssh_dir/known_hosts" \
      -o StrictHostKeyChecking=yes -o BatchMode=yes root@127.0.0.1 true 2>/dev/null
  }
  wait_until 30 ssh_ready
  record sshfs.cipher "$(ssh -G -T -p "$ssh_port" 127.0.0.1 2>/dev/null | awk '/^ciphers / { split($2, c, ","); print c[1] }')"
  workloads sshfs ssh
  record sshfs.disk_bytes "$(du -sb "$ssh_dir/remote" | cut -f1)"
  kill "$sshd_pid" 2>/dev/null || true
  wait_until 30 gone "$sshd_pid"
  rm -rf "$ssh_dir"
fi

record meta.load_end "$(loadavg | tr ' ' ',')"
say "load average at the end: $(loadavg)"
mkdir -p "$(dirname "$out")"
python3 "$root/bench/report.py" "$results" --json "$out"
echo "figures: $out"
