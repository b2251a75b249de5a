#!/usr/bin/env bash
# The twin's RAUC, the Pi's RAUC: RAUC 1.15.2, the release Buildroot 2026.05.1 builds for
# the Pi, from Debian's copy of its source tarball (the same bytes: the SHA-256 Buildroot's
# package/rauc/rauc.hash pins), with the Pi's patches (buildroot-external/patches/rauc/1.15.2)
# applied, cross-built for aarch64 with meson and the options Buildroot's defconfig gives it:
# the D-Bus service, network, streaming (HTTP range requests through the kernel's network
# block device), JSON; GPT off.
#   rauc-build.sh OUT     ->  OUT: the aarch64 rauc binary (not stripped)
# Built once per key (this script, the source's hash, the patches, the package lists, the
# cross compiler) into ${TRELLIS_CACHE:-~/.cache/trellis}/rauc/<key>/rauc; one build per key
# at a time (flock). Headers and link libraries: Debian's arm64 -dev packages
# (board/qemu-aarch64/rauc-build-packages.txt, scripts/debs.sh), unpacked beside the runtime
# libraries of debian-packages.txt; pkg-config reads their .pc files in that sysroot.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: rauc-build.sh OUT}
board=board/qemu-aarch64
version=1.15.2
sha256=127a24cde208c65b837ae978c695a00730f1094ee8b6c7d48cf58ef846eae340
url=${RAUC_SOURCE_URL:-http://deb.debian.org/debian/pool/main/r/rauc/rauc_$version.orig.tar.xz}
patches=buildroot-external/patches/rauc/$version
cross=aarch64-linux-gnu
top=${TRELLIS_CACHE:-$HOME/.cache/trellis}

for tool in "$cross-gcc" meson ninja pkg-config gdbus-codegen; do
  command -v "$tool" >/dev/null || { echo "rauc-build: $tool is missing (scripts/setup.sh --cross)" >&2; exit 1; }
done
ls "$patches"/*.patch >/dev/null 2>&1 || { echo "rauc-build: no patches in $patches" >&2; exit 1; }

key=$( {
  echo "$sha256"
  cat "$0" "$board/rauc-build-packages.txt" "$board/debian-packages.txt" "$patches"/*.patch
  "$cross-gcc" --version | head -1
  meson --version
} | sha256sum | cut -c1-16)
cache=$top/rauc/$key
mkdir -p "$(dirname "$cache")"
exec 8>"$cache.lock"
if ! flock -n 8; then
  echo "rauc-build: waiting for the build of $key already running"
  flock 8
fi
if [ ! -x "$cache/rauc" ]; then
  work=$(mktemp -d "$top/rauc/build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  tarball=$top/rauc/rauc_$version.orig.tar.xz
  if ! echo "$sha256  $tarball" | sha256sum -c --status 2>/dev/null; then
    echo "rauc-build: downloading $url"
    curl -fsSL -o "$tarball.tmp" "$url" || { echo "rauc-build: cannot download $url" >&2; exit 1; }
    echo "$sha256  $tarball.tmp" | sha256sum -c --status \
      || { echo "rauc-build: $url does not have the SHA-256 $sha256" >&2; rm -f "$tarball.tmp"; exit 1; }
    mv "$tarball.tmp" "$tarball"
  fi
  # shellcheck source=scripts/debs.sh
  . scripts/debs.sh
  mapfile -t packages < <(debs_list "$board/debian-packages.txt"; debs_list "$board/rauc-build-packages.txt")
  sysroot=$work/sysroot
  debs_extract "$top/debs" "$sysroot" "${packages[@]}"
  tar -xJf "$tarball" -C "$work"
  src=$work/rauc-$version
  # As Buildroot applies them (support/scripts/apply-patches.sh: patch -p1, in order).
  for p in "$patches"/*.patch; do
    patch -d "$src" -p1 -s --no-backup-if-mismatch <"$p" || { echo "rauc-build: $p does not apply" >&2; exit 1; }
  done
  for mark in 'server not responding: %s' 'ctx.broken = TRUE' 'the slot is being rewritten' 'cannot be synced' \
    'g_subprocess_force_exit(sproc)'; do
    grep -qF "$mark" "$src"/src/{nbd,update_handler,status_file}.c \
      || { echo "rauc-build: the patches are not in $src/src ($mark)" >&2; exit 1; }
  done
  lib=$sysroot/usr/lib/$cross
  # The -dev packages' absolute links (libdbus-1.so -> /lib/...) point into the sysroot.
  find "$sysroot" -type l -lname '/*' | while IFS= read -r l; do ln -sfn "$sysroot$(readlink "$l")" "$l"; done
  # pkg-config on the sysroot's .pc files. Their private dependencies (pcre2, zlib,
  # libmount... of glib) are not needed to build against a shared library and have no
  # -dev package here: each gets an empty .pc file, so pkg-config does not refuse.
  stubs=$work/pc-stubs
  mkdir -p "$stubs"
  wanted=(glib-2.0 gio-2.0 gio-unix-2.0 openssl json-glib-1.0 dbus-1 libcurl libnl-genl-3.0)
  for _ in $(seq 1 20); do
    if why=$(PKG_CONFIG_SYSROOT_DIR=$sysroot PKG_CONFIG_LIBDIR=$lib/pkgconfig:$sysroot/usr/share/pkgconfig:$stubs \
      pkg-config --cflags --libs "${wanted[@]}" 2>&1 >/dev/null); then break; fi
    absent=$(sed -n "s/^Package '\([^']*\)', required by .*/\1/p" <<<"$why" | sort -u)
    [ -n "$absent" ] || { echo "$why" >&2; echo "rauc-build: pkg-config cannot resolve ${wanted[*]} in $sysroot" >&2; exit 1; }
    for m in $absent; do
      printf 'Name: %s\nDescription: a private dependency, not built against\nVersion: 999\n' "$m" >"$stubs/$m.pc"
    done
  done
  cat >"$work/cross.ini" <<CROSS
[binaries]
c = '$cross-gcc'
ar = '$cross-ar'
strip = '$cross-strip'
pkgconfig = 'pkg-config'

[properties]
sys_root = '$sysroot'
pkg_config_libdir = ['$lib/pkgconfig', '$sysroot/usr/share/pkgconfig', '$stubs']

[built-in options]
c_link_args = ['-L$sysroot/lib/$cross', '-Wl,-rpath-link,$lib', '-Wl,-rpath-link,$sysroot/lib/$cross']

[host_machine]
system = 'linux'
cpu_family = 'aarch64'
cpu = 'cortex-a72'
endian = 'little'
CROSS
  echo "rauc-build: building RAUC $version with streaming for aarch64 ($key)"
  meson setup "$work/build" "$src" --cross-file "$work/cross.ini" --prefix=/usr --sysconfdir=/etc \
    --localstatedir=/var --buildtype=release --wrap-mode=nodownload -Dservice=true -Dnetwork=true -Dstreaming=true \
    -Djson=enabled -Dgpt=disabled -Dcomposefs=disabled -Dtests=false -Dhtmldocs=false -Dmanpages=false \
    -Ddbuspolicydir=/usr/share/dbus-1/system.d -Ddbussystemservicedir=/usr/share/dbus-1/system-services \
    -Ddbusinterfacesdir=/usr/share/dbus-1/interfaces -Dsystemdunitdir=no >"$work/meson.log" 2>&1 \
    || { tail -30 "$work/meson.log" >&2; echo "rauc-build: meson setup failed" >&2; exit 1; }
  grep -qx '#define ENABLE_STREAMING 1' "$work/build/config.h" \
    || { echo "rauc-build: meson turned streaming off" >&2; exit 1; }
  # Installed (into a staging directory) rather than taken from the build tree: meson's
  # install drops the build's run path into the sysroot.
  { ninja -C "$work/build" && DESTDIR=$work/dest meson install -C "$work/build" --no-rebuild; } >"$work/ninja.log" 2>&1 \
    || { tail -30 "$work/ninja.log" >&2; echo "rauc-build: the build failed" >&2; exit 1; }
  mkdir -p "$cache.tmp"
  install -m 0755 "$work/dest/usr/bin/rauc" "$cache.tmp/rauc"
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
flock -u 8
mkdir -p "$(dirname "$out")"
cp "$cache/rauc" "$out.tmp" && mv "$out.tmp" "$out"
echo "rauc-build: $out (RAUC $version, streaming)"
