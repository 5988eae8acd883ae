#!/usr/bin/env bash
# build-binary.sh — build the single-file bucketfs executable dist/bucketfs.
#
#   bash scripts/build-binary.sh            # -> dist/bucketfs
#   BUCKETFS_DIST=/some/dir bash scripts/build-binary.sh
#
# `bun build --compile` bundles src/cli/main.ts with its dependencies (citty, the AWS SDK,
# aws-crt's prebuilt N-API .node file, required by a static path in src/store/checksum.ts)
# and the hashing Worker (src/store/hash-worker.ts, a second entry point) into a copy of
# the running Bun runtime:
#   * host target only: the runtime is the bun binary from node_modules, so the build is
#     offline (a foreign --target would download a runtime);
#   * --no-compile-autoload-dotenv / --no-compile-autoload-bunfig: a daemon must not pick
#     up a stray .env (AWS_* credentials!) or bunfig.toml from its working directory;
#   * --minify --sourcemap: smaller bundle, stack traces still name src/ files;
#   * --bytecode --format=esm: the bundle is embedded pre-compiled to JavaScriptCore bytecode,
#     so a start parses nothing (measured here, the binary alternated with one built without
#     it: `bucketfs --help` 17-18 ms instead of 52-82, `status --json` 27-33 ms instead of
#     71-95, a daemon ready about 100 ms sooner (51-103 ms against 151-154 from spawn), its
#     first listing 8-10 ms instead of 15-19 (the SDK's credential chain loads then), idle RSS
#     44-45 MiB against 46; the file is 5 MB larger);
#   * NEVER strip the result (strip/dh_strip/objcopy --strip-*): the bundle lives in a
#     section of the ELF file, and a stripped binary is plain Bun that ignores its app
#     (oven-sh/bun#20599). build-deb.sh checks this again.
# The result needs only glibc at run time, plus libfuse3.so.3 (dlopen'ed when mounting;
# a clear "apt-get install fuse3 libfuse3-3" message when it is missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIST="${BUCKETFS_DIST:-$ROOT/dist}"
BUN="$ROOT/node_modules/.bin/bun"
OUT="$DIST/bucketfs"

say() { printf '[build-binary] %s\n' "$*"; }
die() { printf '[build-binary] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -x "$BUN" ]] || die "node_modules/.bin/bun is missing: run npm ci (or bash scripts/setup.sh)"
mkdir -p "$DIST"

pkg_version=$(sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' package.json | head -n 1)
src_version=$(sed -n 's/^export const VERSION = "\([^"]*\)".*/\1/p' src/cli/main.ts)
[[ -n "$pkg_version" ]] || die "cannot read the version from package.json"
if [[ "$pkg_version" != "$src_version" ]]; then
  die "version mismatch: package.json says $pkg_version, src/cli/main.ts VERSION says $src_version"
fi

say "bun $("$BUN" --version): compiling src/cli/main.ts -> ${OUT#"$ROOT"/} (bucketfs $pkg_version)"
work=$(mktemp -d "$DIST/.build-binary.XXXXXX")
trap 'rm -rf "$work"' EXIT
tmp="$work/bucketfs"
# The source map is embedded in the executable (stack traces name src/ files); the
# bucketfs.map that bun also writes next to the outfile is a by-product and is dropped
# with $work. Renamed into place only when the binary works.
"$BUN" build --compile \
  --no-compile-autoload-dotenv --no-compile-autoload-bunfig \
  --minify --sourcemap --bytecode --format=esm \
  --outfile "$tmp" \
  src/cli/main.ts src/store/hash-worker.ts >/dev/null

chmod 0755 "$tmp"
# The executable must carry the app: a plain Bun (stripped, or a failed embed) prints
# Bun's own version, not ours.
got=$("$tmp" --version 2>&1 | tail -n 1 || true)
[[ "$got" == "$pkg_version" ]] || die "built binary answers --version with '$got', expected '$pkg_version' (stripped or broken?)"
mv -f "$tmp" "$OUT"

size=$(stat -c %s "$OUT")
say "built ${OUT#"$ROOT"/}: $size bytes ($(( (size + 524288) / 1048576 )) MiB), $(file -b "$OUT" 2>/dev/null | cut -d, -f1-2 || echo ELF)"
say "dist/bucketfs --version: $("$OUT" --version)"
