#!/usr/bin/env bash
# Build the device twin's kernel (arm64 Image) from Debian's linux-source-6.1
# with board/qemu-aarch64/linux.fragment, and cache it by the hash of its inputs
# (source package version, fragment, this script, cross compiler).
#   twin-kernel.sh OUT_IMAGE
#   twin-kernel.sh --cache-only   only fill the cache (`make test` runs this in the
#                                 background, scripts/background.sh)
# One build per cache entry at a time: a second caller waits for the first
# (flock) and then takes its result.
# Cache: ${TRELLIS_CACHE:-~/.cache/trellis}/kernel/<hash>/{Image,config,modules/}
# OUT_IMAGE gets the kernel, OUT_IMAGE.config its configuration and
# OUT_IMAGE.modules/lib/modules/... the few modules (i2c-stub).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: twin-kernel.sh OUT_IMAGE | --cache-only}
fragment=board/qemu-aarch64/linux.fragment
tarball=/usr/src/linux-source-6.1.tar.xz
cross=aarch64-linux-gnu-

[ -f "$tarball" ] || { echo "twin-kernel: $tarball is missing (apt-get install linux-source-6.1)" >&2; exit 1; }
command -v "${cross}gcc" >/dev/null || { echo "twin-kernel: ${cross}gcc is missing (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 1; }

key=$( {
  dpkg-query -W -f='${Version}' linux-source-6.1
  cat "$fragment" "$0"
  "${cross}gcc" --version | head -1
} | sha256sum | cut -c1-16)
cache=${TRELLIS_CACHE:-$HOME/.cache/trellis}/kernel/$key
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
if ! flock -n 9; then
  echo "twin-kernel: waiting for the build of $key already running (make test builds it in the background: build/twin/kernel.log)"
  # That build now holds up this one: it gets the normal CPU and I/O priority back
  # (`make test` starts it niced, scripts/background.sh). Raising a priority takes root;
  # without it the build goes on niced.
  if pgid=$(cat "$cache.pgid" 2>/dev/null) && [ -n "$pgid" ]; then
    renice -n 0 -g "$pgid" >/dev/null 2>&1 || true
    ionice -c 2 -n 4 -P "$pgid" 2>/dev/null || true
  fi
  flock 9
fi
# Who holds the lock (its process group), for a caller that waits: removed before unlocking.
ps -o pgid= $$ | tr -d ' ' >"$cache.pgid"
if [ ! -f "$cache/Image" ]; then
  echo "twin-kernel: building the kernel ($key) into $cache; about 5 minutes on 2 cores"
  work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-kernel.XXXXXX")
  trap 'rm -rf "$work" "$cache.pgid"' EXIT
  trap 'exit 143' TERM INT
  tar -xf "$tarball" -C "$work"
  src=$work/linux-source-6.1
  make -s -C "$src" ARCH=arm64 CROSS_COMPILE="$cross" allnoconfig
  "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
  make -s -C "$src" ARCH=arm64 CROSS_COMPILE="$cross" olddefconfig
  # Every option the fragment asks for must have survived (a dependency may drop one silently).
  missing=0
  while IFS= read -r line; do
    case "$line" in CONFIG_*=*) ;; *) continue ;; esac
    if ! grep -qxF "$line" "$src/.config"; then
      echo "twin-kernel: $fragment asks for $line but the kernel configuration has: $(grep "^${line%%=*}=" "$src/.config" || echo "${line%%=*} unset")" >&2
      missing=1
    fi
  done <"$fragment"
  [ "$missing" = 0 ] || exit 1
  make -s -C "$src" ARCH=arm64 CROSS_COMPILE="$cross" KBUILD_BUILD_TIMESTAMP="" \
    KBUILD_BUILD_USER=trellis KBUILD_BUILD_HOST=trellis -j"$(nproc)" Image modules
  rm -rf "$cache"; mkdir -p "$cache"
  make -s -C "$src" ARCH=arm64 CROSS_COMPILE="$cross" INSTALL_MOD_PATH="$cache/modules" INSTALL_MOD_STRIP=1 modules_install
  rm -f "$cache"/modules/lib/modules/*/build "$cache"/modules/lib/modules/*/source
  cp "$src/.config" "$cache/config"
  cp "$src/arch/arm64/boot/Image" "$cache/Image.tmp"
  mv "$cache/Image.tmp" "$cache/Image"
  rm -rf "$work"
  trap - EXIT
fi
rm -f "$cache.pgid"
flock -u 9
if [ "$out" = --cache-only ]; then
  echo "twin-kernel: $cache/Image"
  exit 0
fi
mkdir -p "$(dirname "$out")"
cp "$cache/Image" "$out"
cp "$cache/config" "$out.config"
rm -rf "$out.modules"; cp -a "$cache/modules" "$out.modules"
echo "twin-kernel: $out ($(du -h "$out" | cut -f1), cache $key)"
