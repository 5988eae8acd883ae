#!/usr/bin/env bash
# build-libfuse.sh — build the libfuse releases users run (for the version-matrix test) from the
# release tarballs in ../shared/libfuse/ (or $BUCKETFS_LIBFUSE_SRC) into .build/libfuse/<version>/.
#
#   bash scripts/build-libfuse.sh            # every libfuse-*.tar.gz found
#   bash scripts/build-libfuse.sh 3.17.4     # only these versions
#
# Each version ends up as .build/libfuse/<version>/{lib/libfuse3.so.3.X.Y, include/*.h, source.sha256},
# with lib/libfuse3.so and lib/<its soname> linked to the library (3.17 changed the soname to
# libfuse3.so.4; older ones are libfuse3.so.3).
# A build is kept while its tarball's sha256 (and the build options below) equal source.sha256;
# otherwise it is rebuilt. Release builds (-O2), as distributions ship them.
# Needs meson, ninja (Debian: meson, ninja-build) and gcc. Nothing is installed system-wide: the
# test loads each library with BUCKETFS_LIBFUSE=.build/libfuse/<version>/lib/libfuse3.so.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${BUCKETFS_LIBFUSE_SRC:-$(cd "$ROOT/.." && pwd)/shared/libfuse}"
# Worktrees live one level deeper than the main checkout; look beside both.
[[ -d "$SRC" ]] || SRC="$(cd "$ROOT/../.." && pwd)/shared/libfuse"
OUT="$ROOT/.build/libfuse"

say() { printf '[libfuse] %s\n' "$*"; }
die() { printf '[libfuse] ERROR: %s\n' "$*" >&2; exit 1; }

[[ -d "$SRC" ]] || { say "no release tarballs at $SRC; the version-matrix test will skip"; exit 0; }
command -v meson >/dev/null || die "meson not found (apt-get install meson)"
command -v ninja >/dev/null || die "ninja not found (apt-get install ninja-build)"

wanted=("$@")
shopt -s nullglob
tarballs=("$SRC"/libfuse-*.tar.gz)
[[ ${#tarballs[@]} -gt 0 ]] || { say "no libfuse-*.tar.gz in $SRC"; exit 0; }

for tgz in "${tarballs[@]}"; do
  base=$(basename "$tgz" .tar.gz)
  version=${base#libfuse-}
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " == *" $version "* ]]; then continue; fi
  dest="$OUT/$version"
  work_opts="--buildtype=release -Dexamples=false -Dutils=false -Dudevrulesdir=/tmp/ignored-udev"
  sum="$(sha256sum "$tgz" | cut -d' ' -f1) $work_opts"
  if [[ -f "$dest/source.sha256" && "$(cat "$dest/source.sha256")" == "$sum" && -e "$dest/lib/libfuse3.so" ]]; then
    say "$version: present (tarball unchanged)"
    continue
  fi
  say "$version: building (log: .build/libfuse/$version.log)"
  rm -rf "$dest" "$dest.tmp"
  mkdir -p "$dest.tmp"
  work="$dest.tmp/src"
  mkdir -p "$work"
  tar -xzf "$tgz" -C "$work" --strip-components=1
  read -r -a opts <<<"$work_opts"
  # 3.3.0 has no `tests` option.
  if grep -q "option('tests'" "$work/meson_options.txt"; then opts+=(-Dtests=false); fi
  if ! { (cd "$work" && meson setup build "${opts[@]}" && ninja -C build); } >"$OUT/$version.log" 2>&1; then
    tail -n 20 "$OUT/$version.log" | sed 's/^/[libfuse]   /' >&2
    die "$version: build failed (full log: .build/libfuse/$version.log)"
  fi
  so=$(find "$work/build/lib" -maxdepth 1 -name 'libfuse3.so.3.*' -type f | head -n 1)
  [[ -n "$so" ]] || die "$version: no libfuse3.so.3.* in the build"
  mkdir -p "$dest.tmp/lib" "$dest.tmp/include"
  cp "$so" "$dest.tmp/lib/"
  soname=$(objdump -p "$so" | awk '$1 == "SONAME" {print $2}')
  [[ -n "$soname" ]] || die "$version: no SONAME in $(basename "$so")"
  ln -s "$(basename "$so")" "$dest.tmp/lib/$soname"
  ln -s "$(basename "$so")" "$dest.tmp/lib/libfuse3.so"
  cp "$work"/include/*.h "$dest.tmp/include/"
  # Generated at build time by some versions (libfuse_config.h, fuse_config.h).
  find "$work/build" -maxdepth 2 -name '*config.h' -exec cp {} "$dest.tmp/include/" \;
  rm -rf "$work"
  echo "$sum" > "$dest.tmp/source.sha256"
  mv "$dest.tmp" "$dest"
  say "$version: built $(basename "$so")"
done
