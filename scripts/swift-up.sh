#!/usr/bin/env bash
# Starts a throwaway single-node OpenStack Swift (Debian's packages) with the s3api middleware and
# tempauth, one replica, its data, rings, logs and TLS certificates under DIR, for the tests and
# the benchmark of the S3 backend. The proxy speaks HTTPS on PORT (a certificate for 127.0.0.1 and
# localhost, signed by a CA made here: DIR/tls/ca.pem); the account, container and object servers
# and memcached listen on 127.0.0.1 at PORT+1 .. PORT+4.
#
#   scripts/swift-up.sh DIR PORT|auto then   . DIR/env   (SWIFT_S3_ENDPOINT, SWIFT_CA_FILE,
#                                                         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
#   scripts/swift-down.sh DIR         stops it (by the PIDs recorded in DIR/pids)
#
# Swift reads /etc/swift/swift.conf from that fixed path (Debian's file is kept); everything else
# comes from DIR. The servers run under /usr/bin/python3 whatever python is first on PATH.
set -Eeuo pipefail
# A step that fails says which (openssl's and the ring builder's chatter is silenced).
trap 'echo "$0: line $LINENO failed: $BASH_COMMAND" >&2' ERR

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT|auto" >&2
  exit 2
fi
dir=$(realpath -m "$1")
port=$2
if [ "$port" = auto ]; then
  # Five consecutive free ports.
  port=$("$(dirname "$0")/free-ports.py" 5)
fi
if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65530 ]; then
  echo "$0: PORT must be a number from 1024 to 65530" >&2
  exit 2
fi
for program in swift-proxy-server swift-object-server swift-container-server \
  swift-account-server swift-ring-builder memcached openssl; do
  if ! command -v "$program" >/dev/null; then
    echo "$0: $program is missing; run scripts/setup.sh" >&2
    exit 1
  fi
done
if [ ! -f /etc/swift/swift.conf ]; then
  echo "$0: /etc/swift/swift.conf is missing (it comes with the swift package)" >&2
  exit 1
fi
if [ -f "$dir/pids" ]; then
  echo "$0: $dir already holds a running Swift (see $dir/pids)" >&2
  exit 1
fi

account_port=$((port + 1))
container_port=$((port + 2))
object_port=$((port + 3))
memcached_port=$((port + 4))
user=$(id -un)
mkdir -p "$dir/etc" "$dir/node/d1" "$dir/log" "$dir/tls" "$dir/run"
chmod 700 "$dir"

# TLS: a CA and a server certificate for the proxy.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=splitfs test Swift CA" -keyout "$dir/tls/ca.key" -out "$dir/tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$dir/tls/server.key" -out "$dir/tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$dir/tls/ext"
openssl x509 -req -in "$dir/tls/server.csr" -CA "$dir/tls/ca.pem" -CAkey "$dir/tls/ca.key" \
  -CAcreateserial -days 30 -extfile "$dir/tls/ext" -out "$dir/tls/server.pem" 2>/dev/null
chmod 600 "$dir/tls/"*.key

# Rings: one device, one replica.
(
  cd "$dir/etc"
  for ring in account:$account_port container:$container_port object:$object_port; do
    name=${ring%%:*}
    swift-ring-builder "$name.builder" create 8 1 1 >/dev/null
    swift-ring-builder "$name.builder" add "r1z1-127.0.0.1:${ring##*:}/d1" 1 >/dev/null
    swift-ring-builder "$name.builder" rebalance >/dev/null
  done
)

common="[DEFAULT]
bind_ip = 127.0.0.1
user = $user
swift_dir = $dir/etc
devices = $dir/node
mount_check = false
log_level = WARNING
"
for server in account container object; do
  server_port_var="${server}_port"
  # Two object server workers, like the proxy's, so that concurrent uploads use both cores.
  workers=1
  [ "$server" = object ] && workers=2
  cat >"$dir/etc/$server-server.conf" <<EOF
${common}bind_port = ${!server_port_var}
workers = $workers
[pipeline:main]
pipeline = $server-server
[app:$server-server]
use = egg:swift#$server
[$server-replicator]
[$server-auditor]
[$server-updater]
EOF
done
cat >"$dir/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
user = $user
swift_dir = $dir/etc
workers = 2
log_level = WARNING
cert_file = $dir/tls/server.pem
key_file = $dir/tls/server.key
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$memcached_port
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
EOF

: >"$dir/pids"
memcached -l 127.0.0.1 -p "$memcached_port" -U 0 -m 64 -u "$user" >"$dir/log/memcached.log" 2>&1 &
echo $! >>"$dir/pids"
for server in account container object proxy; do
  # -v: log to stderr too, since without syslog Swift's log lines go nowhere.
  /usr/bin/python3 "/usr/bin/swift-$server-server" "$dir/etc/$server-server.conf" -v \
    >"$dir/log/$server.log" 2>&1 &
  echo $! >>"$dir/pids"
done

cat >"$dir/env" <<EOF
SWIFT_S3_ENDPOINT=https://127.0.0.1:$port
SWIFT_CA_FILE=$dir/tls/ca.pem
AWS_ACCESS_KEY_ID=test:tester
AWS_SECRET_ACCESS_KEY=testing
EOF
chmod 600 "$dir/env"

# Ready once the proxy answers its health check over TLS.
for _ in $(seq 1 300); do
  if curl -sf --cacert "$dir/tls/ca.pem" --max-time 2 "https://127.0.0.1:$port/healthcheck" \
    >/dev/null 2>&1; then
    echo "swift listening on https://127.0.0.1:$port (data in $dir)"
    exit 0
  fi
  while read -r pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$0: a Swift process exited at start; logs in $dir/log" >&2
      tail -n 5 "$dir"/log/*.log >&2 || true
      "$(dirname "$0")/swift-down.sh" "$dir"
      exit 1
    fi
  done <"$dir/pids"
  sleep 0.1
done
echo "$0: Swift did not come up within 30 s; logs in $dir/log" >&2
"$(dirname "$0")/swift-down.sh" "$dir"
exit 1
