#!/usr/bin/env bash
# setup.sh — install everything bucketfs' build and test suite needs on a
# Debian 12 machine (run as root, or with sudo available). Idempotent: when
# everything is already in place it only checks and returns in about a second.
#
# What it provides:
#   * Debian packages: FUSE 3 (runtime + headers), Debian's python3-boto3 (the
#     independent S3 client used by the tests), s3fs and rclone (reference
#     FUSE clients), iproute2, ca-certificates.
#   * node_modules via `npm ci` (skipped while it matches package-lock.json).
#   * An S3 server binary for the integration tests in .build/bin: MinIO,
#     or versitygw when MinIO cannot be built. The one available is recorded
#     in .build/s3server (one word: minio or versitygw).
#   * The workflow engines the pipeline tests run, pinned, under .build/engines:
#     Snakemake from PyPI in a venv, and Nextflow's jars from Maven Central
#     (run by scripts/engines/nextflow with the machine's Java).
#   * The libfuse releases of the version-matrix test (3.3.0, 3.10.5, 3.17.4,
#     3.18.1), built with meson and ninja from ../shared/libfuse/*.tar.gz into
#     .build/libfuse/<version>/ by scripts/build-libfuse.sh (kept while each
#     tarball's sha256 is unchanged).
#
# Environment knobs:
#   BUCKETFS_SKIP_APT=1    do not check/install Debian packages
#   BUCKETFS_SKIP_NPM=1    do not check/run npm ci
#   BUCKETFS_S3SERVER=versitygw   skip MinIO and provide versitygw directly
#   BUCKETFS_SKIP_ENGINES=1  do not install Nextflow and Snakemake (their tests then skip)
#   BUCKETFS_SKIP_LIBFUSE=1  do not build the libfuse releases (the matrix test then skips them)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BUILD="$ROOT/.build"
BIN="$BUILD/bin"
mkdir -p "$BIN"

START_TS=$(date +%s)
log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Go lives in /usr/local/go/bin on these machines; make sure it is found even
# when the caller's PATH is minimal (CI).
for d in /usr/local/go/bin /usr/lib/go/bin; do
  if [[ -x "$d/go" && ":$PATH:" != *":$d:"* ]]; then PATH="$PATH:$d"; fi
done
export PATH

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); fi
fi

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
# default-jre-headless + maven: Nextflow and its jars; python3-venv: Snakemake's venv;
# meson + ninja-build: the libfuse releases of the matrix test; rpm: scripts/build-rpm.sh.
APT_PACKAGES=(fuse3 libfuse3-3 libfuse3-dev python3-boto3 s3fs rclone iproute2 ca-certificates
              default-jre-headless maven python3-venv meson ninja-build rpm)

if [[ "${BUCKETFS_SKIP_APT:-}" == 1 ]]; then
  log "apt: skipped (BUCKETFS_SKIP_APT=1)"
else
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then missing+=("$p"); fi
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "apt: all ${#APT_PACKAGES[@]} packages present"
  else
    log "apt: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
      die "apt packages missing (${missing[*]}) and not running as root (no sudo)"
    fi
    export DEBIAN_FRONTEND=noninteractive
    APT_LOG="$BUILD/apt.log"
    if ! { "${SUDO[@]}" apt-get update -q \
           && "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$APT_LOG" 2>&1; then
      tail -n 20 "$APT_LOG" | sed 's/^/[setup]   /' >&2 || true
      die "apt-get failed (full log: .build/apt.log)"
    fi
    log "apt: installed ${missing[*]}"
  fi
fi

# /usr/bin/python3 must be able to import boto3 (tests use it, not pyenv's).
if [[ "${BUCKETFS_SKIP_APT:-}" != 1 ]]; then
  if ! /usr/bin/python3 -c 'import boto3' >/dev/null 2>&1; then
    die "/usr/bin/python3 cannot import boto3 although python3-boto3 is installed"
  fi
fi

# ---------------------------------------------------------------------------
# 2. node_modules (npm ci)
# ---------------------------------------------------------------------------
NPM_STAMP="$BUILD/npm-ci.stamp"
lock_hash() { cat package.json package-lock.json | sha256sum | cut -d' ' -f1; }

# True when node_modules/.package-lock.json (npm's record of what it
# installed) lists exactly the packages and versions of package-lock.json.
node_modules_match_lock() {
  [[ -f node_modules/.package-lock.json ]] || return 1
  node -e '
    const fs = require("fs");
    const want = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages || {};
    const have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages || {};
    for (const [k, v] of Object.entries(want)) {
      if (k === "" || !k.startsWith("node_modules/")) continue;
      const h = have[k];
      // optional deps for other platforms (os/cpu/libc) are legitimately absent
      if (v.optional && !h) continue;
      if (!h || h.version !== v.version || !fs.existsSync(k)) { process.exit(1); }
    }
  ' 2>/dev/null
}

if [[ "${BUCKETFS_SKIP_NPM:-}" == 1 ]]; then
  log "npm: skipped (BUCKETFS_SKIP_NPM=1)"
else
  want_hash=$(lock_hash)
  if [[ -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$want_hash" \
        && -x node_modules/.bin/tsc && -x node_modules/.bin/bun ]]; then
    log "npm: node_modules up to date (stamp matches package-lock.json)"
  elif [[ -x node_modules/.bin/tsc && -x node_modules/.bin/bun ]] && node_modules_match_lock; then
    echo "$want_hash" > "$NPM_STAMP"
    log "npm: node_modules already matches package-lock.json (stamp written)"
  else
    command -v npm >/dev/null 2>&1 || die "npm not found (install Node.js 20+)"
    log "npm: running npm ci"
    npm ci --no-audit --no-fund --loglevel=error
    [[ -x node_modules/.bin/bun ]] || die "npm ci finished but node_modules/.bin/bun is missing"
    echo "$want_hash" > "$NPM_STAMP"
    log "npm: done"
  fi
fi

# ---------------------------------------------------------------------------
# 3. S3 server binary (MinIO, falling back to versitygw)
# ---------------------------------------------------------------------------
SERVER_FILE="$BUILD/s3server"

binary_works() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

provide_minio() {
  if binary_works "$BIN/minio"; then
    log "s3: MinIO present at .build/bin/minio"
    return 0
  fi
  local gopath_bin=""
  if command -v go >/dev/null 2>&1; then gopath_bin="$(go env GOPATH 2>/dev/null)/bin"; fi
  local cand
  for cand in "$gopath_bin/minio" /root/go/bin/minio; do
    if [[ -n "$cand" && "$cand" != "/minio" ]] && binary_works "$cand"; then
      log "s3: copying existing MinIO build from $cand"
      cp -f "$cand" "$BIN/minio.tmp" && mv -f "$BIN/minio.tmp" "$BIN/minio"
      return 0
    fi
  done
  command -v go >/dev/null 2>&1 || { log "s3: go not found, cannot build MinIO"; return 1; }
  log "s3: building MinIO with go install (takes ~10 minutes; log: .build/minio-build.log)"
  if GOBIN="$BIN" go install github.com/minio/minio@latest >"$BUILD/minio-build.log" 2>&1 \
     && binary_works "$BIN/minio"; then
    log "s3: MinIO built"
    return 0
  fi
  log "s3: MinIO build failed (tail of .build/minio-build.log follows)"
  tail -n 15 "$BUILD/minio-build.log" | sed 's/^/[setup]   /' || true
  return 1
}

provide_versitygw() {
  if [[ -x "$BIN/versitygw" ]]; then
    log "s3: versitygw present at .build/bin/versitygw"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "s3: go not found, cannot build versitygw"; return 1; }
  log "s3: building versitygw with go install (log: .build/versitygw-build.log)"
  if GOBIN="$BIN" go install github.com/versity/versitygw/cmd/versitygw@latest \
       >"$BUILD/versitygw-build.log" 2>&1 && [[ -x "$BIN/versitygw" ]]; then
    log "s3: versitygw built"
    return 0
  fi
  log "s3: versitygw build failed (tail of .build/versitygw-build.log follows)"
  tail -n 15 "$BUILD/versitygw-build.log" | sed 's/^/[setup]   /' || true
  return 1
}

recorded="$(cat "$SERVER_FILE" 2>/dev/null || true)"
server=""
if [[ "${BUCKETFS_S3SERVER:-}" == versitygw ]]; then
  provide_versitygw && server=versitygw
elif binary_works "$BIN/minio"; then
  log "s3: MinIO present at .build/bin/minio"
  server=minio
elif [[ "$recorded" == versitygw && -x "$BIN/versitygw" ]]; then
  # MinIO failed to build earlier; don't retry a slow failing build on every
  # run. Delete .build/bin/versitygw (or .build/s3server) to try MinIO again.
  log "s3: using versitygw recorded earlier (MinIO unavailable)"
  server=versitygw
elif provide_minio; then
  server=minio
elif provide_versitygw; then
  server=versitygw
fi
[[ -n "$server" ]] || die "no S3 server binary could be provided (neither MinIO nor versitygw)"
echo "$server" > "$SERVER_FILE"
log "s3: server = $server (.build/s3server)"

# ---------------------------------------------------------------------------
# 4. Workflow engines for test/integration/pipelines.test.ts (pinned)
# ---------------------------------------------------------------------------
ENGINES="$BUILD/engines"
NXF_VERSION=24.10.0
SNAKEMAKE_VERSION=9.27.1
NXF_LIB="$ENGINES/nextflow-$NXF_VERSION"
SMK_VENV="$ENGINES/snakemake-venv"
ENGINES_STAMP="$ENGINES/engines.stamp"
engines_want="nextflow=$NXF_VERSION snakemake=$SNAKEMAKE_VERSION $(sha256sum scripts/engines/nextflow-pom.xml | cut -d' ' -f1)"

if [[ "${BUCKETFS_SKIP_ENGINES:-}" == 1 ]]; then
  log "engines: skipped (BUCKETFS_SKIP_ENGINES=1)"
elif [[ -f "$ENGINES_STAMP" && "$(cat "$ENGINES_STAMP")" == "$engines_want" \
        && -f "$NXF_LIB/nextflow-$NXF_VERSION.jar" && -x "$SMK_VENV/bin/snakemake" ]]; then
  log "engines: Nextflow $NXF_VERSION and Snakemake $SNAKEMAKE_VERSION present (stamp matches)"
else
  mkdir -p "$ENGINES"
  rm -f "$ENGINES_STAMP"
  if [[ ! -f "$NXF_LIB/nextflow-$NXF_VERSION.jar" ]]; then
    command -v mvn >/dev/null 2>&1 || die "mvn not found (apt package maven)"
    command -v java >/dev/null 2>&1 || die "java not found (apt package default-jre-headless)"
    log "engines: fetching Nextflow $NXF_VERSION jars from Maven Central (log: .build/engines/mvn.log)"
    rm -rf "$NXF_LIB.tmp"
    if ! mvn -B -q -f scripts/engines/nextflow-pom.xml -Dmaven.repo.local="$ENGINES/m2" \
           dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$NXF_LIB.tmp" \
           >"$ENGINES/mvn.log" 2>&1 || [[ ! -f "$NXF_LIB.tmp/nextflow-$NXF_VERSION.jar" ]]; then
      tail -n 15 "$ENGINES/mvn.log" | sed 's/^/[setup]   /' >&2 || true
      die "could not fetch Nextflow's jars (full log: .build/engines/mvn.log)"
    fi
    rm -rf "$NXF_LIB" && mv "$NXF_LIB.tmp" "$NXF_LIB"
  fi
  if ! "$SMK_VENV/bin/python" -c "import snakemake, sys; sys.exit(snakemake.__version__ != '$SNAKEMAKE_VERSION')" >/dev/null 2>&1; then
    log "engines: installing Snakemake $SNAKEMAKE_VERSION into .build/engines/snakemake-venv (log: .build/engines/pip.log)"
    rm -rf "$SMK_VENV"
    if ! { /usr/bin/python3 -m venv "$SMK_VENV" \
           && "$SMK_VENV/bin/pip" install -q --disable-pip-version-check "snakemake==$SNAKEMAKE_VERSION"; } \
           >"$ENGINES/pip.log" 2>&1; then
      tail -n 15 "$ENGINES/pip.log" | sed 's/^/[setup]   /' >&2 || true
      die "could not install Snakemake (full log: .build/engines/pip.log)"
    fi
  fi
  # Smoke check: both start.
  NXF_HOME="$ENGINES/nxf-home" scripts/engines/nextflow -version >"$ENGINES/nextflow-version.txt" 2>&1 \
    || { cat "$ENGINES/nextflow-version.txt" >&2; die "Nextflow does not start"; }
  "$SMK_VENV/bin/snakemake" --version >/dev/null 2>&1 || die "Snakemake does not start"
  echo "$engines_want" > "$ENGINES_STAMP"
  log "engines: Nextflow $NXF_VERSION and Snakemake $SNAKEMAKE_VERSION installed"
fi

# ---------------------------------------------------------------------------
# 5. libfuse releases for test/integration/libfuse-matrix.test.ts
# ---------------------------------------------------------------------------
if [[ "${BUCKETFS_SKIP_LIBFUSE:-}" == 1 ]]; then
  log "libfuse: skipped (BUCKETFS_SKIP_LIBFUSE=1)"
else
  if ! bash "$ROOT/scripts/build-libfuse.sh" | sed 's/^\[libfuse\]/[setup] libfuse:/'; then
    die "building the libfuse releases failed (logs: .build/libfuse/*.log)"
  fi
fi

log "done in $(( $(date +%s) - START_TS ))s"
