#!/usr/bin/env bash
# Signed bundles that must not stick, for the rollback tests and `make compare`:
#   twin-broken-bundle.sh BUILD_DIR unhealthy OUT   the runtime refuses every app
#       (require-signatures with no trusted key), so the trial never gets healthy
#   twin-broken-bundle.sh BUILD_DIR crash OUT       the runtime cannot start (a bad
#       configuration file), so init gives up on it and reboots
#   twin-broken-bundle.sh BUILD_DIR kernel OUT      the boot slot's kernel is cut
#       to its first MiB, so the trial boot never starts Linux
# Both are correctly signed and compatible: RAUC installs them; the trial decides.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: twin-broken-bundle.sh BUILD_DIR unhealthy|crash|kernel OUT"
build=${1:?$usage}
kind=${2:?$usage}
out=${3:?$usage}
twin=$build/twin
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-broken.XXXXXX")
trap 'rm -rf "$work"' EXIT
case $kind in
  unhealthy | crash)
    unsquashfs -q -no-progress -d "$work/root" "$twin/rootfs.squashfs" >/dev/null
    conf=$work/root/etc/trellis/runtime.toml
    [ -f "$conf" ] || { echo "twin-broken-bundle: no etc/trellis/runtime.toml in the rootfs" >&2; exit 1; }
    if [ "$kind" = unhealthy ]; then
      # Top-level keys go before the first [table]; a shorter gate keeps the test short.
      { echo "require-signatures = true"; echo "trust = []"; cat "$conf"; } >"$work/runtime.toml"
      sed -i 's/^health-deadline-ms = .*/health-deadline-ms = 20000/' "$work/runtime.toml"
    else
      { echo "no-such-setting = true"; cat "$conf"; } >"$work/runtime.toml"
    fi
    mv "$work/runtime.toml" "$conf"
    scripts/twin-squashfs.sh "$work/root" "$work/rootfs.squashfs"
    ROOTFS_IMAGE=$work/rootfs.squashfs VERSION=${VERSION:-$kind} scripts/twin-bundle.sh "$build" "$out"
    ;;
  kernel)
    cp "$twin/boot.vfat" "$work/boot.vfat"
    mcopy -n -i "$work/boot.vfat" ::Image "$work/Image"
    head -c 1048576 "$work/Image" >"$work/Image.cut"
    mcopy -o -i "$work/boot.vfat" "$work/Image.cut" ::Image
    BOOT_IMAGE=$work/boot.vfat VERSION=${VERSION:-no-kernel} scripts/twin-bundle.sh "$build" "$out"
    ;;
  *) echo "twin-broken-bundle: unknown kind '$kind' ($usage)" >&2; exit 2 ;;
esac
