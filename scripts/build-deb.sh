#!/usr/bin/env bash
# build-deb.sh — build dist/bucketfs_<version>_amd64.deb with dpkg-deb (no debhelper).
#
#   bash scripts/build-deb.sh             # builds dist/bucketfs first (scripts/build-binary.sh)
#   bash scripts/build-deb.sh --no-build  # package the existing dist/bucketfs as it is
#
# Version: package.json. Environment: BUCKETFS_DIST (output dir, default dist/),
# BUCKETFS_DEB_COMPRESS (dpkg-deb compression flags, default "-Zxz -z1": ~6 s, ~45 MB;
# "-Zxz -z6" is ~8 % smaller and takes ~50 s).
#
# Contents (root:root):
#   /usr/bin/bucketfs                           0755  the compiled binary, NEVER stripped
#   /lib/systemd/system/bucketfs.service        0644  debian/bucketfs.service
#   /etc/bucketfs/                              0700  credentials live here
#   /etc/bucketfs/bucketfs.conf.sample          0600  conf.sample (conffile); `cp` keeps 0600
#   /etc/logrotate.d/bucketfs                   0644  debian/bucketfs.logrotate (conffile)
#   /usr/share/doc/bucketfs/{README.md,copyright,changelog.gz}
#   /usr/share/lintian/overrides/bucketfs
# /etc/bucketfs/bucketfs.conf is NOT shipped: the admin creates it (see debian/postrm for
# what remove and purge do with it). Checks before it writes the .deb: the unit passes
# `systemd-analyze verify` (against the staged binary), the maintainer scripts parse, the
# staged binary is byte-identical to dist/bucketfs and answers --version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIST="${BUCKETFS_DIST:-$ROOT/dist}"
COMPRESS="${BUCKETFS_DEB_COMPRESS:--Zxz -z1}"

say() { printf '[build-deb] %s\n' "$*"; }
die() { printf '[build-deb] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/packaging.sh
source "$ROOT/scripts/lib/packaging.sh"

build_flag "$@"

command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"
version=$(package_version)
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "package.json version '$version' is not a Debian version"
arch=$(dpkg --print-architecture)
[[ "$arch" == amd64 ]] || die "this builds an amd64 package from the host binary; host is $arch"

packaged_binary "$BUILD" "$version"

DEB="$DIST/bucketfs_${version}_${arch}.deb"
STAGE=$(mktemp -d "$DIST/.deb-stage.XXXXXX")
trap 'rm -rf "$STAGE" "$STAGE.deb"' EXIT
chmod 0755 "$STAGE"

# --- files ------------------------------------------------------------------------------
install -d -m 0755 "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/logrotate.d" \
  "$STAGE/usr/share/doc/bucketfs" "$STAGE/usr/share/lintian/overrides" "$STAGE/DEBIAN"
install -d -m 0700 "$STAGE/etc/bucketfs"
# `install` without -s: never strip (the app lives inside the executable).
install -m 0755 "$BIN" "$STAGE/usr/bin/bucketfs"
cmp -s "$BIN" "$STAGE/usr/bin/bucketfs" || die "staged binary differs from $BIN"
install -m 0644 debian/bucketfs.service "$STAGE/lib/systemd/system/bucketfs.service"
install -m 0600 conf.sample "$STAGE/etc/bucketfs/bucketfs.conf.sample"
install -m 0644 debian/bucketfs.logrotate "$STAGE/etc/logrotate.d/bucketfs"
install -m 0644 README.md "$STAGE/usr/share/doc/bucketfs/README.md"
install -m 0644 debian/copyright "$STAGE/usr/share/doc/bucketfs/copyright"
install -m 0644 debian/lintian-overrides "$STAGE/usr/share/lintian/overrides/bucketfs"
# Native-package changelog (one entry per build; SOURCE_DATE_EPOCH makes it reproducible).
maintainer=$(sed -n 's/^Maintainer: //p' debian/control)
when=$(date -u -R ${SOURCE_DATE_EPOCH:+-d "@$SOURCE_DATE_EPOCH"})
printf 'bucketfs (%s) unstable; urgency=medium\n\n  * bucketfs %s, built by scripts/build-deb.sh from the source tree.\n\n -- %s  %s\n' \
  "$version" "$version" "$maintainer" "$when" | gzip -9n > "$STAGE/usr/share/doc/bucketfs/changelog.gz"
chmod 0644 "$STAGE/usr/share/doc/bucketfs/changelog.gz"

# --- control area -----------------------------------------------------------------------
for s in postinst prerm postrm; do
  sh -n "debian/$s" || die "debian/$s has a syntax error"
  install -m 0755 "debian/$s" "$STAGE/DEBIAN/$s"
done
printf '%s\n' /etc/bucketfs/bucketfs.conf.sample /etc/logrotate.d/bucketfs > "$STAGE/DEBIAN/conffiles"
chmod 0644 "$STAGE/DEBIAN/conffiles"
installed_kb=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_kb/" debian/control > "$STAGE/DEBIAN/control"
grep -qE '@[A-Z_]+@' "$STAGE/DEBIAN/control" && die "unreplaced @PLACEHOLDER@ in debian/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
  | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"

# --- checks -----------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
  # verify needs ExecStart's binary to exist: check a copy that points at the staged one.
  vdir=$(mktemp -d)
  sed "s#^ExecStart=/usr/bin/bucketfs #ExecStart=$STAGE/usr/bin/bucketfs #" debian/bucketfs.service > "$vdir/bucketfs.service"
  if ! out=$(systemd-analyze verify "$vdir/bucketfs.service" 2>&1); then
    rm -rf "$vdir"
    die "systemd-analyze verify failed: $out"
  fi
  rm -rf "$vdir"
  [[ -z "$out" ]] || say "systemd-analyze verify: $out"
  say "systemd-analyze verify: ok"
else
  say "systemd-analyze not found: unit not verified (apt-get install systemd)"
fi

# --- build ------------------------------------------------------------------------------
# Built under a unique name and renamed: a concurrent build or install never sees half a file.
tmpdeb="$STAGE.deb"
# shellcheck disable=SC2086 # COMPRESS holds several flags
dpkg-deb --root-owner-group $COMPRESS --build "$STAGE" "$tmpdeb" >/dev/null
mv -f "$tmpdeb" "$DEB"
say "built ${DEB#"$ROOT"/}: $(stat -c %s "$DEB") bytes, installed size ${installed_kb} KiB"
dpkg-deb --field "$DEB" Package Version Architecture Depends | sed 's/^/[build-deb]   /'
if command -v lintian >/dev/null; then
  # Advisory only (overrides in debian/lintian-overrides explain the intentional ones).
  lint=$(lintian --tag-display-limit 0 "$DEB" 2>&1) || true
  lint=$(printf '%s\n' "$lint" | grep -v -e 'running with root privileges' -e '^$' || true)
  if [[ -z "$lint" ]]; then say "lintian: clean"; else printf '%s\n' "$lint" | sed 's/^/[build-deb] lintian: /'; fi
fi
