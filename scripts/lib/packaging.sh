# packaging.sh — sourced by build-deb.sh and build-rpm.sh: what both packages take from the tree.
# Expects ROOT, DIST and a die() function from the caller.

# BUILD from the script's arguments: 1, or 0 with --no-build (package dist/bucketfs as it is).
build_flag() {
  local a
  BUILD=1
  for a in "$@"; do
    case "$a" in
      --no-build) BUILD=0 ;;
      *) die "unknown argument $a (use --no-build)" ;;
    esac
  done
}

# package.json's "version".
package_version() {
  sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$ROOT/package.json" | head -n 1
}

# The compiled binary both packages ship, as BIN: built first when $1 is 1 (scripts/build-binary.sh),
# and checked to answer --version with $2 (a stale binary is never packaged).
packaged_binary() {
  local build="$1" want="$2" got
  if [[ "$build" -eq 1 ]]; then
    BUCKETFS_DIST="$DIST" bash "$ROOT/scripts/build-binary.sh"
  fi
  BIN="$DIST/bucketfs"
  [[ -x "$BIN" ]] || die "$BIN missing: run scripts/build-binary.sh (or drop --no-build)"
  got=$("$BIN" --version 2>&1 | tail -n 1)
  [[ "$got" == "$want" ]] || die "$BIN --version says '$got', package.json says '$want' (rebuild it)"
}
