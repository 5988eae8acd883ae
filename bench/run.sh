#!/usr/bin/env bash
# bench/run.sh — the whole benchmark in one command from a clean clone:
#   bash bench/run.sh [--quick] [--latency 20ms] [other bench/run.ts options]
# Runs scripts/setup.sh (Debian packages incl. s3fs and rclone, node_modules, MinIO), installs
# python3-matplotlib for the chart and samtools for the real-BAM row when missing, then bench/run.ts. Needs root (drops the page
# cache, mounts FUSE, and with --latency creates a network namespace).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ $(id -u) -ne 0 ]]; then
  echo "bench/run.sh: run as root (page-cache drops, FUSE mounts, network namespaces)" >&2
  exit 1
fi

bash scripts/setup.sh

if ! /usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1; then
  echo "[bench] installing python3-matplotlib (for the PNG chart)"
  mkdir -p .build
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib \
         || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-matplotlib; }; } \
       >.build/apt-bench.log 2>&1; then
    echo "[bench] WARNING: python3-matplotlib could not be installed (see .build/apt-bench.log); the PNG chart will be skipped" >&2
  fi
fi
if ! command -v samtools >/dev/null 2>&1; then
  echo "[bench] installing samtools (for the real-BAM row, test 9)"
  mkdir -p .build
  if ! { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends samtools \
         || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends samtools; }; } \
       >>.build/apt-bench.log 2>&1; then
    echo "[bench] WARNING: samtools could not be installed (see .build/apt-bench.log); the real-BAM row will be skipped" >&2
  fi
fi
for tool in curl dd ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "[bench] $tool is missing" >&2; exit 1; }
done

exec node_modules/.bin/bun bench/run.ts "$@"
