#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster (Debian's postgresql package) for the S3 backend's share
# index: initdb into DIR/data, listening on 127.0.0.1:PORT and a unix socket in DIR, a role
# "splitfs" with a random password (in DIR/pgpass, mode 0600, for $PGPASSFILE: never on a command
# line) owning the database "splitfs". As root, the cluster runs as the postgres user.
#
#   scripts/pg-up.sh DIR PORT|auto then   . DIR/env   (SPLITFS_PG_URL, PGPASSFILE)
#   scripts/pg-down.sh DIR         stops it (by the postmaster's PID)
set -Eeuo pipefail
# A step that fails says which, with the tail of the cluster's logs (they go with the folder).
trap 'echo "$0: line $LINENO failed: $BASH_COMMAND" >&2; tail -n 5 "${dir:-.}"/*.log >&2 2>/dev/null || true' ERR

if [ $# -ne 2 ]; then
  echo "usage: $0 DIR PORT|auto" >&2
  exit 2
fi
dir=$(realpath -m "$1")
port=$2
if [ "$port" = auto ]; then
  port=$("$(dirname "$0")/free-ports.py" 1)
fi
if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1024 ] || [ "$port" -gt 65535 ]; then
  echo "$0: PORT must be a number from 1024 to 65535" >&2
  exit 2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "$0: PostgreSQL server binaries are missing; run scripts/setup.sh" >&2
  exit 1
fi
if [ -f "$dir/data/postmaster.pid" ]; then
  echo "$0: $dir already holds a running cluster" >&2
  exit 1
fi

# as_owner CMD...: runs CMD as the cluster's owner (postgres when we are root).
if [ "$(id -u)" -eq 0 ]; then
  owner=postgres
  as_owner() { runuser -u postgres -- "$@"; }
else
  owner=$(id -un)
  as_owner() { "$@"; }
fi
mkdir -p "$dir"
chmod 755 "$dir"
chown "$owner" "$dir"

password=$(openssl rand -hex 24)
as_owner "$bin/initdb" -D "$dir/data" -U "$owner" --auth-local=peer --auth-host=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1
cat >"$dir/data/pg_hba.conf" <<EOF
local all $owner peer
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
EOF
as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=64MB" \
  start >/dev/null
# The password goes in through stdin, never on a command line.
as_owner "$bin/psql" -h "$dir" -p "$port" -U "$owner" -d postgres -v ON_ERROR_STOP=1 -q \
  <<EOF >/dev/null
CREATE ROLE splitfs LOGIN PASSWORD '$password';
CREATE DATABASE splitfs OWNER splitfs;
EOF
umask 077
# Any port: tests reach the cluster through fault-injecting proxies on ports of their own.
printf '127.0.0.1:*:splitfs:splitfs:%s\n%s:*:splitfs:splitfs:%s\n' "$password" "$dir" "$password" \
  >"$dir/pgpass"
cat >"$dir/env" <<EOF
SPLITFS_PG_URL=postgresql://splitfs@127.0.0.1:$port/splitfs
PGPASSFILE=$dir/pgpass
EOF
echo "postgresql listening on 127.0.0.1:$port (data in $dir/data)"
