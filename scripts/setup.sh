#!/usr/bin/env bash
# Installs the Debian packages splitfs needs to build, test and run, skipping those present.
set -euo pipefail

packages=(
  cmake ninja-build g++ make pkg-config ccache git clang-format python3
  libboost1.81-dev libssl-dev libcurl4-openssl-dev libsqlite3-dev libtomlplusplus-dev
  libcli11-dev catch2 openssl libzstd-dev zlib1g-dev libfuse3-dev fuse3
  # The malware check: YARA, Hyperscan (its prefilter), ClamAV (libclamav in-process), libarchive,
  # JSON for the quarantine.
  libyara-dev libhyperscan-dev libclamav-dev libarchive-dev nlohmann-json3-dev
  # The shared store (issue 12): libpq for the index; PostgreSQL, a single-node Swift with s3api
  # and HAProxy for its tests and benchmark (scripts/pg-up.sh, scripts/swift-up.sh).
  libpq-dev postgresql swift swift-proxy swift-object swift-container swift-account memcached
  haproxy
)

missing=()
for p in "${packages[@]}"; do
  # grep -c, not -q, after a pipe: -q stops reading at the first match, and the writer's SIGPIPE
  # then fails the pipeline under pipefail.
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -c "install ok installed" >/dev/null; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
