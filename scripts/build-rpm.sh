#!/usr/bin/env bash
# build-rpm.sh — build dist/bucketfs-<version>.x86_64.rpm with rpmbuild (Debian's `rpm` package
# is enough; no RHEL machine needed), beside the .deb of scripts/build-deb.sh.
#
#   bash scripts/build-rpm.sh             # builds dist/bucketfs first (scripts/build-binary.sh)
#   bash scripts/build-rpm.sh --no-build  # package the existing dist/bucketfs as it is
#
# The same files as the .deb, at the paths RHEL-family systems use (root:root):
#   /usr/bin/bucketfs                             0755  the compiled binary, NEVER stripped
#   /usr/lib/systemd/system/bucketfs.service      0644  debian/bucketfs.service (the .deb's unit)
#   /etc/bucketfs/                                0700  credentials live here
#   /etc/bucketfs/bucketfs.conf.sample            0600  conf.sample, %config(noreplace)
#   /etc/logrotate.d/bucketfs                     0644  debian/bucketfs.logrotate, %config(noreplace)
#   /usr/share/doc/bucketfs/{README.md,copyright}
# Requires: fuse3 and fuse3-libs (libfuse3.so.3 on RHEL 8/9, 3.3 and 3.10; bucketfs also loads
# libfuse3.so.4 of 3.17+). No automatic requirements: the binary links only glibc (its floor is
# in the README) and dlopens libfuse. Scriptlets, as the .deb's maintainer scripts do:
#   %post    /etc/bucketfs and an existing bucketfs.conf made private, daemon-reload, next steps;
#   %preun   on erase (not upgrade): stop the service (unmount, then upload) and disable it;
#   %postun  daemon-reload. An upgrade never restarts a running bucketfs.
# rpm has no purge: /etc/bucketfs/bucketfs.conf (the admin's, not in the package) and the cache
# directories are never deleted.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIST="${BUCKETFS_DIST:-$ROOT/dist}"

say() { printf '[build-rpm] %s\n' "$*"; }
die() { printf '[build-rpm] ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/packaging.sh
source "$ROOT/scripts/lib/packaging.sh"

build_flag "$@"

command -v rpmbuild >/dev/null || die "rpmbuild not found (apt-get install rpm)"
version=$(package_version)
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "package.json version '$version' is not an RPM version (no '-')"
[[ "$(uname -m)" == x86_64 ]] || die "this packages the host binary as x86_64; host is $(uname -m)"

packaged_binary "$BUILD" "$version"

RPM="$DIST/bucketfs-${version}.x86_64.rpm"
TOP=$(mktemp -d "$DIST/.rpm-build.XXXXXX")
trap 'rm -rf "$TOP"' EXIT
mkdir -p "$TOP"/{SOURCES,SPECS,BUILD,RPMS,SRPMS,BUILDROOT}
src="$TOP/SOURCES"
cp "$BIN" "$src/bucketfs"
cp debian/bucketfs.service debian/bucketfs.logrotate debian/copyright conf.sample README.md "$src/"

cat > "$TOP/SPECS/bucketfs.spec" <<SPEC
Name:           bucketfs
Version:        ${version}
Release:        1
Summary:        Transactional FUSE filesystem for S3 buckets
License:        Apache-2.0
URL:            https://github.com/leoustc/bucketfs
ExclusiveArch:  x86_64
Requires:       fuse3
Requires:       fuse3-libs
AutoReqProv:    no
# The bundle lives inside the executable: no stripping, no debuginfo, no build-id games.
%global debug_package %{nil}
%global __os_install_post %{nil}
%global __strip /bin/true
%global _build_id_links none

%description
bucketfs mounts the buckets of /etc/bucketfs/bucketfs.conf at /<bucket>.
Outside the configured workdir a bucket is a read-only namespace whose
objects are downloaded into a local cache on first open. The workdir is
prefetched at start and bind-mounted from the cache as plain local storage;
on stop (systemctl stop bucketfs) bucketfs unmounts and uploads the changed
files, marker files (.exitcode) last. No remote deletes.

Built for workflow engines (Nextflow, HPC and batch jobs). The package ships
a single self-contained executable (Bun runtime included; do not strip it),
a systemd unit (Type=notify, not enabled by default), a logrotate config and
a sample config. Runs with libfuse 3.3 and newer; FUSE passthrough for cached
files needs libfuse 3.14+ and Linux 6.9+.

%install
install -d -m 0755 %{buildroot}/usr/bin %{buildroot}/usr/lib/systemd/system %{buildroot}/etc/logrotate.d %{buildroot}/usr/share/doc/bucketfs
install -d -m 0700 %{buildroot}/etc/bucketfs
install -m 0755 %{_sourcedir}/bucketfs %{buildroot}/usr/bin/bucketfs
install -m 0644 %{_sourcedir}/bucketfs.service %{buildroot}/usr/lib/systemd/system/bucketfs.service
install -m 0600 %{_sourcedir}/conf.sample %{buildroot}/etc/bucketfs/bucketfs.conf.sample
install -m 0644 %{_sourcedir}/bucketfs.logrotate %{buildroot}/etc/logrotate.d/bucketfs
install -m 0644 %{_sourcedir}/README.md %{_sourcedir}/copyright %{buildroot}/usr/share/doc/bucketfs/

%post
# /etc/bucketfs holds credentials: root only. The admin's bucketfs.conf is made private.
chown root:root /etc/bucketfs && chmod 0700 /etc/bucketfs
if [ -f /etc/bucketfs/bucketfs.conf ] && [ -n "\$(find /etc/bucketfs/bucketfs.conf -perm /0077 2>/dev/null)" ]; then
  chmod go-rwx /etc/bucketfs/bucketfs.conf
  echo "bucketfs: /etc/bucketfs/bucketfs.conf holds credentials; made it readable by its owner only" >&2
fi
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null 2>&1 || :
  # An upgrade never restarts a running bucketfs: that would unmount the workdir under a pipeline.
  if [ "\$1" -gt 1 ] && systemctl is-active --quiet bucketfs.service 2>/dev/null; then
    echo "bucketfs: the running service keeps the old version until its next stop/start" >&2
  fi
fi
if [ "\$1" -eq 1 ] && [ ! -f /etc/bucketfs/bucketfs.conf ]; then
  echo "bucketfs: next steps: cp /etc/bucketfs/bucketfs.conf.sample /etc/bucketfs/bucketfs.conf," >&2
  echo "  edit it, check it with 'bucketfs check-config', then 'systemctl enable --now bucketfs'" >&2
fi
exit 0

%preun
# Erase (not upgrade): stop (unmount, then upload the workdirs; pending files stay in the
# cache if that fails) and disable the service.
if [ "\$1" -eq 0 ] && [ -d /run/systemd/system ]; then
  echo "bucketfs: stopping bucketfs.service if it runs (unmount, then upload of the workdirs)..." >&2
  systemctl stop bucketfs.service || \
    echo "bucketfs: stop reported an error; see journalctl -u bucketfs (pending files stay in the cache)" >&2
  systemctl --no-reload disable bucketfs.service >/dev/null 2>&1 || :
fi
exit 0

%postun
if [ -d /run/systemd/system ]; then
  systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
if [ "\$1" -eq 0 ]; then
  echo "bucketfs: /etc/bucketfs/bucketfs.conf and the cache directories (cachepath in the config) are kept" >&2
fi
exit 0

%files
%defattr(-,root,root,-)
%attr(0755,root,root) /usr/bin/bucketfs
%attr(0644,root,root) /usr/lib/systemd/system/bucketfs.service
%dir %attr(0700,root,root) /etc/bucketfs
%config(noreplace) %attr(0600,root,root) /etc/bucketfs/bucketfs.conf.sample
%config(noreplace) %attr(0644,root,root) /etc/logrotate.d/bucketfs
%dir %attr(0755,root,root) /usr/share/doc/bucketfs
%doc %attr(0644,root,root) /usr/share/doc/bucketfs/README.md
%license %attr(0644,root,root) /usr/share/doc/bucketfs/copyright
SPEC

say "rpmbuild: ${RPM#"$ROOT"/}"
# -bb only; w2.xzdio: fast xz (the payload is one ~100 MB binary).
if ! rpmbuild -bb --quiet --define "_topdir $TOP" --define "_binary_payload w2.xzdio" \
     --define "_buildhost bucketfs-build" "$TOP/SPECS/bucketfs.spec" >"$TOP/rpmbuild.log" 2>&1; then
  tail -n 30 "$TOP/rpmbuild.log" | sed 's/^/[build-rpm]   /' >&2
  die "rpmbuild failed"
fi
out=$(find "$TOP/RPMS" -name '*.rpm' | head -n 1)
[[ -n "$out" ]] || die "rpmbuild produced no package"
mv -f "$out" "$RPM"
say "built ${RPM#"$ROOT"/}: $(stat -c %s "$RPM") bytes"
rpm -qp --requires "$RPM" 2>/dev/null | grep -v '^rpmlib(' | sed 's/^/[build-rpm]   requires: /'
