#!/usr/bin/env bash
# test.sh — bucketfs' full check, as CI runs it (.ci/run execs this):
#   1. scripts/setup.sh (apt packages, npm ci, S3 server binary; fast when done)
#   2. typecheck: tsc --noEmit -p tsconfig.json
#   3. bun test over test/ (normal output streamed, JUnit XML in .build/junit.xml)
#   4. leftover FUSE mounts under $BUCKETFS_TEST_ROOT (default /tmp/bucketfs-test) are reported and lazily
#      unmounted, before the run (leftovers of an earlier run) and after it
#      (leaks of this run, counted as failures); new entries left in
#      that root by the run are counted as failures too.
# The LAST line printed is exactly "N passed, N failed" (", N skipped" is
# added when tests were skipped). Exit status is non-zero if a test failed,
# the typecheck failed, a FUSE mount leaked, or no test ran at all.
# Extra arguments are passed to `bun test` (e.g. a path filter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD="$ROOT/.build"
mkdir -p "$BUILD"
JUNIT="$BUILD/junit.xml"
TEST_LOG="$BUILD/test-output.log"
TEST_ROOT="${BUCKETFS_TEST_ROOT:-/tmp/bucketfs-test}"   # test/helpers/s3server.ts reads the same variable
MOUNT_ROOTS=("$TEST_ROOT" "$ROOT/.test-tmp")

say() { printf '[test] %s\n' "$*"; }

# Prints FUSE mount points under MOUNT_ROOTS, one per line.
fuse_mounts() {
  local dev mp type rest root
  while read -r dev mp type rest; do
    [[ "$type" == fuse* ]] || continue
    mp=$(printf '%b' "${mp//\\/\\0}")   # /proc/mounts escapes space etc. as \040
    for root in "${MOUNT_ROOTS[@]}"; do
      if [[ "$mp" == "$root" || "$mp" == "$root"/* ]]; then printf '%s\n' "$mp"; fi
    done
  done < /proc/mounts
}

# Reports and lazily unmounts leftover FUSE mounts; prints how many it found.
sweep_mounts() {
  local when="$1" n=0 mp
  while IFS= read -r mp; do
    [[ -n "$mp" ]] || continue
    n=$((n + 1))
    say "leftover FUSE mount ($when): $mp — unmounting (umount -l)" >&2
    umount -l "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null \
      || say "  could not unmount $mp" >&2
  done < <(fuse_mounts)
  echo "$n"
}

# 1. setup ------------------------------------------------------------------
say "setup"
bash scripts/setup.sh

# 2. typecheck ----------------------------------------------------------------
say "typecheck: tsc --noEmit -p tsconfig.json"
typecheck_ok=1
if node_modules/.bin/tsc --noEmit -p tsconfig.json; then
  say "typecheck: ok"
else
  typecheck_ok=0
  say "typecheck: FAILED"
fi

# 3. tests ----------------------------------------------------------------------
before=$(sweep_mounts "before the run")
[[ "$before" -eq 0 ]] || say "$before leftover FUSE mount(s) from an earlier run were removed"
# What $TEST_ROOT holds before the run: anything new after it was left behind by a test.
mkdir -p "$TEST_ROOT"
entries_before=$(ls -A "$TEST_ROOT" | sort)

rm -f "$JUNIT"
say "bun test ./test/ (junit: .build/junit.xml)"
set +e
# --timeout: bun 1.4 ignores a [test] timeout in bunfig.toml; integration
# tests start real servers and FUSE mounts, so 5 s per test is too short.
node_modules/.bin/bun test ./test/ --timeout="${BUCKETFS_TEST_TIMEOUT_MS:-120000}" \
  --reporter=junit --reporter-outfile="$JUNIT" "$@" 2>&1 | tee "$TEST_LOG"
bun_rc=${PIPESTATUS[0]}
set -e
say "bun test exited with $bun_rc"

leaked=$(sweep_mounts "after the run")
left_dirs=$(comm -13 <(printf '%s\n' "$entries_before") <(ls -A "$TEST_ROOT" | sort) | grep -v '^$' || true)

# 4. counts ---------------------------------------------------------------------
counts="0 0 0"
if [[ -s "$JUNIT" ]]; then
  counts=$(/usr/bin/python3 - "$JUNIT" <<'PY'
import sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        failed += 1
    elif "skipped" in tags:
        skipped += 1
    else:
        passed += 1
print(passed, failed, skipped)
PY
  ) || { say "could not parse $JUNIT"; counts="0 0 0"; }
else
  say "no JUnit report at $JUNIT"
fi
read -r passed failed skipped <<<"$counts"

# Errors outside any test (a test file that fails to load, an unhandled
# error) are missing from the JUnit file; bun's own summary counts them.
bun_fail=$(grep -aE '^[[:space:]]*[0-9]+ fail$' "$TEST_LOG" | tail -n 1 | grep -oE '[0-9]+' || true)
if [[ -n "$bun_fail" && "$bun_fail" -gt "$failed" ]]; then
  say "bun reported $bun_fail failure(s), $((bun_fail - failed)) outside the JUnit report (load or unhandled errors)"
  failed=$bun_fail
fi
if [[ "$bun_rc" -ne 0 && "$failed" -eq 0 ]]; then
  say "bun test exited $bun_rc without a failing test: counted as 1 failure"
  failed=1
fi
if [[ "$leaked" -gt 0 ]]; then
  say "$leaked FUSE mount(s) leaked by this run: counted as failure(s)"
  failed=$((failed + leaked))
fi
if [[ -n "$left_dirs" ]]; then
  n_left=$(printf '%s\n' "$left_dirs" | wc -l)
  say "$n_left temp entr(y/ies) left in $TEST_ROOT by this run, counted as failure(s): $(echo $left_dirs)"
  failed=$((failed + n_left))
fi

rc=0
if [[ "$typecheck_ok" -ne 1 ]]; then say "FAILED: typecheck"; rc=1; fi
if [[ "$failed" -gt 0 ]]; then rc=1; fi
if [[ $((passed + failed)) -eq 0 ]]; then say "FAILED: no test ran"; rc=1; fi

line="$passed passed, $failed failed"
if [[ "$skipped" -gt 0 ]]; then line="$line, $skipped skipped"; fi
echo "$line"
exit "$rc"
