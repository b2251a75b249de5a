#!/usr/bin/env bash
# Healthy, signed bundles whose root filesystem differs from the image's by a
# known amount, for the streamed and adaptive install tests (tests/twin/tests/stream.rs):
#   twin-variant-bundle.sh BUILD_DIR small OUT    one line added to /etc/trellis/release:
#       the blocks RAUC's adaptive mode must fetch are the few this changes
#   twin-variant-bundle.sh BUILD_DIR tweaked OUT  another line added there: one line
#       changed against `small`
#   twin-variant-bundle.sh BUILD_DIR bootfile OUT  the image's root filesystem, and its boot
#       files with one file added: a boot.tar of its own
#   twin-variant-bundle.sh BUILD_DIR rebuilt OUT  the same files with 64 KiB squashfs
#       blocks instead of 128 KiB: no 4 KiB block is the same, everything is fetched
#   twin-variant-bundle.sh BUILD_DIR reblocked OUT  the same with 32 KiB blocks: nothing
#       in common with the image nor with `rebuilt` (installed over a slot holding it)
#   twin-variant-bundle.sh BUILD_DIR code-base OUT  the image's root filesystem with its
#       runtime rebuilt from a copy of the source (BUILD_DIR/twin/variants/base.squashfs,
#       make runtime-variants)
#   twin-variant-bundle.sh BUILD_DIR code-line OUT  the same with one line of the runtime's
#       code changed (variants/log-line.squashfs), and the firmware delta from code-base
# VERSION names the bundle's version (default: the kind).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: twin-variant-bundle.sh BUILD_DIR small|tweaked|bootfile|rebuilt|reblocked|code-base|code-line OUT"
build=${1:?$usage}
kind=${2:?$usage}
out=${3:?$usage}
twin=$build/twin
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-variant.XXXXXX")
trap 'rm -rf "$work"' EXIT
variants=$twin/variants
# Only code-line carries a delta, whatever the caller's environment says.
unset DELTA_FROM
case $kind in
  code-base | code-line)
    image=$variants/base.squashfs
    [ "$kind" = code-line ] && image=$variants/log-line.squashfs
    [ -f "$image" ] || { echo "twin-variant-bundle: $image is missing (make runtime-variants)" >&2; exit 1; }
    cp "$image" "$work/rootfs.squashfs"
    if [ "$kind" = code-line ]; then export DELTA_FROM=$variants/base.squashfs; fi
    ;;
  *) unsquashfs -q -no-progress -d "$work/root" "$twin/rootfs.squashfs" >/dev/null ;;
esac
case $kind in
  code-base | code-line) ;;
  small | tweaked)
    echo "TRELLIS_VARIANT=$kind" >>"$work/root/etc/trellis/release"
    scripts/twin-squashfs.sh "$work/root" "$work/rootfs.squashfs"
    ;;
  rebuilt | reblocked)
    block=65536
    [ "$kind" = reblocked ] && block=32768
    epoch=$(sed -n 's/^TRELLIS_BUILD_TIME=//p' "$work/root/etc/trellis/release")
    SOURCE_DATE_EPOCH=$epoch mksquashfs "$work/root" "$work/rootfs.squashfs" -comp zstd -b "$block" \
      -all-root -noappend -quiet -no-progress >/dev/null
    ;;
  bootfile)
    cp "$twin/boot.vfat" "$work/boot.vfat"
    echo "a boot file of the $kind variant" >"$work/variant.txt"
    mcopy -i "$work/boot.vfat" "$work/variant.txt" ::/variant.txt
    cp "$twin/rootfs.squashfs" "$work/rootfs.squashfs"
    ;;
  *) echo "twin-variant-bundle: unknown kind '$kind' ($usage)" >&2; exit 2 ;;
esac
boot_image=$twin/boot.vfat
if [ -f "$work/boot.vfat" ]; then boot_image=$work/boot.vfat; fi
BOOT_IMAGE=$boot_image ROOTFS_IMAGE=$work/rootfs.squashfs VERSION=${VERSION:-$kind} scripts/twin-bundle.sh "$build" "$out"
