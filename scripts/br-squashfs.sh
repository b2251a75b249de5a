#!/usr/bin/env bash
# The firmware delta for an image Buildroot made (the Pi's, and the twin's with `make qemu-br`):
#   br-squashfs.sh --delta BASE NEW OUT      (BR2_CONFIG: the build's .config)
#   br-squashfs.sh --recipe                  the mksquashfs options, one per line
# The delta (trellis-delta) from root filesystem image BASE to NEW, whose recipe is the
# mksquashfs options Buildroot's fs/squashfs/squashfs.mk of the pinned release (2026.05.1,
# SHA-256 51dc751a47ed53114057eda9520c61685204ddc3c73a9c82d1ba565618f19334; br-check
# compares) gives for BR2_CONFIG, with NEW's creation time (-mkfs-time, from its superblock);
# file times, owners and modes are in the delta itself. It is checked to rebuild NEW from
# BASE bit for bit before it is kept, so a recipe that differs from Buildroot's stops here.
# The device rebuilds with its own mksquashfs: Buildroot's target squashfs is the same
# release as the host-squashfs that made NEW, and must have NEW's compressor. Settings a
# recipe cannot follow are refused, naming them: unpadded images, no compression, and the
# compressors' options but -Xcompression-level (-Xhc, -Xbcj: extreme lz4 and xz).
# squashfs.mk's -processors is left out: the output does not depend on it.
set -euo pipefail
usage="usage: BR2_CONFIG=.config br-squashfs.sh --delta BASE NEW OUT | --recipe"
mode=${1:-}
[ "$mode" = --delta ] || [ "$mode" = --recipe ] || { echo "$usage" >&2; exit 2; }
# Paths as given, from where it was called.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
config=$(abs "${BR2_CONFIG:?br-squashfs: BR2_CONFIG is not set (Buildroot sets it for post-image scripts)}")
[ -f "$config" ] || { echo "br-squashfs: BR2_CONFIG=$config is missing" >&2; exit 1; }
if [ "$mode" = --delta ]; then
  base=$(abs "${2:?$usage}")
  new=$(abs "${3:?$usage}")
  out=$(abs "${4:?$usage}")
fi
cd "$(dirname "$0")/.."
refuse() { echo "br-squashfs: $config: $*" >&2; exit 1; }

# A symbol's value in the .config, as Buildroot's qstrip gives it: y, a string without its
# quotes, or empty when unset.
symbol() { sed -n "s/^$1=//p" "$config" | sed 's/^"\(.*\)"$/\1/'; }

[ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS)" = y ] || refuse "it builds no squashfs root filesystem"
# Unpadded, the image's end on a slot is not known: the device could not name what it rebuilt.
[ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS_PAD)" = y ] \
  || refuse "a firmware delta needs BR2_TARGET_ROOTFS_SQUASHFS_PAD=y (padded images)"
block=$(symbol BR2_TARGET_ROOTFS_SQUASHFS_BS)
[ -n "$block" ] || refuse "no BR2_TARGET_ROOTFS_SQUASHFS_BS"
comp=gzip
for c in lz4 lzo lzma xz zstd; do
  if [ "$(symbol "BR2_TARGET_ROOTFS_SQUASHFS4_${c^^}")" = y ]; then comp=$c; fi
done
[ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS4_NONE)" != y ] \
  || refuse "BR2_TARGET_ROOTFS_SQUASHFS4_NONE (-no-compression) is not in what a firmware delta's recipe may hold"
# The device rebuilds with its own mksquashfs: it must have the compressor.
[ "$(symbol "BR2_PACKAGE_SQUASHFS_${comp^^}")" = y ] \
  || refuse "the image is $comp-compressed, but the device's squashfs has no $comp (BR2_PACKAGE_SQUASHFS_${comp^^})"
args=(-noappend -b "$block")
# squashfs.mk splits the options on white space, as this does; of the compressors' options a
# recipe may hold only -Xcompression-level N (extreme compression: gzip, lzo and zstd).
read -r -a extra <<<"$(symbol BR2_TARGET_ROOTFS_SQUASHFS_COMP_OPTS)"
if [ "${#extra[@]}" -gt 0 ] && { [ "${#extra[@]}" -ne 2 ] || [ "${extra[0]}" != -Xcompression-level ] \
  || ! [[ ${extra[1]} =~ ^[0-9]+$ ]]; }; then
  refuse "BR2_TARGET_ROOTFS_SQUASHFS_COMP_OPTS=\"${extra[*]}\": of the compressors' options a firmware delta's recipe may hold only -Xcompression-level N"
fi
args+=("${extra[@]}" -comp "$comp")
if [ "$mode" = --recipe ]; then
  printf '%s\n' "${args[@]}"
  exit 0
fi
delta=${TRELLIS_DELTA:-target/debug/trellis-delta}
[ -x "$delta" ] || { echo "br-squashfs: $delta is missing (cargo build -p trellis-delta)" >&2; exit 1; }

# The superblock: magic "hsqs", inode count, then the creation time (32 bits, little-endian).
[ "$(head -c 4 "$new")" = hsqs ] || { echo "br-squashfs: $new is not a squashfs image" >&2; exit 1; }
mkfs_time=$(od -An -tu4 -j8 -N4 --endian=little "$new" | tr -d ' ')
exec "$delta" make --base "$base" --new "$new" --out "$out" -- "${args[@]}" -mkfs-time "$mkfs_time" -quiet -no-progress
