#!/usr/bin/env bash
# README command #1: set up a fresh Debian machine (apt packages, npm ci, MinIO build) and
# run the embedded-default demo: local S3 server + sample bucket, mounted, shown working.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec node_modules/.bin/bun scripts/demo.ts "$@"
