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
# release as the host-squashfs that made NEW. Options a recipe may not hold (-Xhc, -Xbcj:
# extreme compression for lz4 and xz) are refused by trellis-delta, naming them.
# squashfs.mk's -processors is left out: the output does not depend on it.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: BR2_CONFIG=.config br-squashfs.sh --delta BASE NEW OUT | --recipe"
mode=${1:-}
[ "$mode" = --delta ] || [ "$mode" = --recipe ] || { echo "$usage" >&2; exit 2; }
config=${BR2_CONFIG:?br-squashfs: BR2_CONFIG is not set (Buildroot sets it for post-image scripts)}
[ -f "$config" ] || { echo "br-squashfs: BR2_CONFIG=$config is missing" >&2; exit 1; }

# A symbol's value in the .config: y, a string without its quotes, or empty when unset.
symbol() { sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$config"; }

[ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS)" = y ] || { echo "br-squashfs: $config builds no squashfs root filesystem" >&2; exit 1; }
# Unpadded, the image's end on a slot is not known: the device could not name what it rebuilt.
[ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS_PAD)" = y ] \
  || { echo "br-squashfs: a firmware delta needs BR2_TARGET_ROOTFS_SQUASHFS_PAD=y (padded images)" >&2; exit 1; }
block=$(symbol BR2_TARGET_ROOTFS_SQUASHFS_BS)
[ -n "$block" ] || { echo "br-squashfs: $config has no BR2_TARGET_ROOTFS_SQUASHFS_BS" >&2; exit 1; }
comp=gzip
for c in lz4 lzo lzma xz zstd; do
  if [ "$(symbol "BR2_TARGET_ROOTFS_SQUASHFS4_${c^^}")" = y ]; then comp=$c; fi
done
if [ "$(symbol BR2_TARGET_ROOTFS_SQUASHFS4_NONE)" = y ]; then comp=none; fi
args=(-noappend -b "$block")
# squashfs.mk splits the options on white space, as this does.
read -r -a extra <<<"$(symbol BR2_TARGET_ROOTFS_SQUASHFS_COMP_OPTS)"
args+=("${extra[@]}")
if [ "$comp" = none ]; then args+=(-no-compression); else args+=(-comp "$comp"); fi
if [ "$mode" = --recipe ]; then
  printf '%s\n' "${args[@]}"
  exit 0
fi
base=${2:?$usage}
new=${3:?$usage}
out=${4:?$usage}
delta=${TRELLIS_DELTA:-target/debug/trellis-delta}
[ -x "$delta" ] || { echo "br-squashfs: $delta is missing (cargo build -p trellis-delta)" >&2; exit 1; }

# The superblock: magic "hsqs", inode count, then the creation time (32 bits, little-endian).
[ "$(head -c 4 "$new")" = hsqs ] || { echo "br-squashfs: $new is not a squashfs image" >&2; exit 1; }
mkfs_time=$(od -An -tu4 -j8 -N4 --endian=little "$new" | tr -d ' ')
exec "$delta" make --base "$base" --new "$new" --out "$out" -- "${args[@]}" -mkfs-time "$mkfs_time" -quiet -no-progress
