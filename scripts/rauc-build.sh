#!/usr/bin/env bash
# The twin's RAUC: RAUC 1.8 (Debian bookworm's upstream source tarball, checked against its
# SHA-256, with board/qemu-aarch64/rauc-1.8-*.patch applied) cross-built for aarch64 with
# streaming (HTTP range requests through the kernel's network block device), network, JSON
# and the D-Bus service; GPT off. Debian's rauc
# package is the same version built without streaming; Buildroot builds it with
# BR2_PACKAGE_RAUC_STREAMING for the Pi.
#   rauc-build.sh OUT     ->  OUT: the aarch64 rauc binary (not stripped)
# Built once per key (this script, the source's hash, board/qemu-aarch64/rauc-build-packages.txt,
# the cross compiler) into ${TRELLIS_CACHE:-~/.cache/trellis}/rauc/<key>/rauc; one build per
# key at a time (flock). Headers and link libraries: Debian's arm64 -dev packages
# (scripts/debs.sh), unpacked beside the runtime libraries of debian-packages.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: rauc-build.sh OUT}
board=board/qemu-aarch64
version=1.8
sha256=d233247c1763b1c56c851d0adef2094b7aa2fcd72decf524a8ac0419188e0978
url=${RAUC_SOURCE_URL:-http://deb.debian.org/debian/pool/main/r/rauc/rauc_$version.orig.tar.xz}
cross=aarch64-linux-gnu
top=${TRELLIS_CACHE:-$HOME/.cache/trellis}

command -v "$cross-gcc" >/dev/null || { echo "rauc-build: $cross-gcc is missing (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 1; }
command -v gdbus-codegen >/dev/null || { echo "rauc-build: gdbus-codegen is missing (apt-get install libglib2.0-dev-bin)" >&2; exit 1; }

key=$( {
  echo "$sha256"
  cat "$0" "$board/rauc-build-packages.txt" "$board/debian-packages.txt" "$board/rauc-$version"-*.patch
  "$cross-gcc" --version | head -1
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
  # git apply relative to the source alone (its own repository: inside another work
  # tree git would skip paths outside it and still succeed).
  git -C "$src" init -q
  for p in "$board/rauc-$version"-*.patch; do
    git -C "$src" apply --whitespace=nowarn "$PWD/$p" || { echo "rauc-build: $p does not apply" >&2; exit 1; }
  done
  for mark in 'ctx.broken = TRUE' 'server not responding: %s' 'the slot is being rewritten' \
    'names no image while it is rewritten' 'cannot be synced'; do
    grep -qF "$mark" "$src"/src/{nbd,update_handler,install,config_file}.c \
      || { echo "rauc-build: the patches are not in $src/src ($mark)" >&2; exit 1; }
  done
  lib=$sysroot/usr/lib/$cross
  # pkg-config is not used: the flags of each library, as its .pc file gives them, with the
  # sysroot's paths (pkg-config would want every Requires.private's -dev package too).
  echo "rauc-build: building RAUC $version with streaming for aarch64 ($key)"
  (
    cd "$src"
    ./configure -q --host="$cross" --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
      --enable-streaming --enable-network --enable-json --enable-service --disable-gpt \
      --with-systemdunitdir=no --with-dbuspolicydir=/usr/share/dbus-1/system.d \
      --with-dbussystemservicedir=/usr/share/dbus-1/system-services \
      --with-dbusinterfacesdir=/usr/share/dbus-1/interfaces \
      PKG_CONFIG=/bin/false \
      GLIB_CFLAGS="-I$sysroot/usr/include/glib-2.0 -I$lib/glib-2.0/include -I$sysroot/usr/include/gio-unix-2.0" \
      GLIB_LIBS="-lgio-2.0 -lgobject-2.0 -lglib-2.0" \
      CURL_CFLAGS="-I$sysroot/usr/include/$cross" CURL_LIBS="-lcurl-gnutls" \
      OPENSSL_CFLAGS="-I$sysroot/usr/include -I$sysroot/usr/include/$cross" OPENSSL_LIBS="-lssl -lcrypto" \
      JSON_GLIB_CFLAGS="-I$sysroot/usr/include/json-glib-1.0" JSON_GLIB_LIBS="-ljson-glib-1.0" \
      DBUS1_CFLAGS="-I$sysroot/usr/include/dbus-1.0 -I$lib/dbus-1.0/include" DBUS1_LIBS="-ldbus-1" \
      NL3_CFLAGS="-I$sysroot/usr/include/libnl3" NL3_LIBS="-lnl-genl-3 -lnl-3" \
      LDFLAGS="-L$lib -L$sysroot/lib/$cross -Wl,-rpath-link,$lib -Wl,-rpath-link,$sysroot/lib/$cross"
    grep -qx '#define ENABLE_STREAMING 1' config.h || { echo "rauc-build: configure turned streaming off" >&2; exit 1; }
    make -s -j"$(nproc)" rauc >"$work/make.log" 2>&1 || { tail -30 "$work/make.log" >&2; echo "rauc-build: make failed" >&2; exit 1; }
  )
  mkdir -p "$cache.tmp"
  install -m 0755 "$src/rauc" "$cache.tmp/rauc"
  rm -rf "$cache"; mv "$cache.tmp" "$cache"
fi
flock -u 8
mkdir -p "$(dirname "$out")"
cp "$cache/rauc" "$out.tmp" && mv "$out.tmp" "$out"
echo "rauc-build: $out (RAUC $version, streaming)"
