#!/usr/bin/env bash
# `make flash DEV=/dev/sdX [IMAGE=...] [FORCE=1]`: write the card image with a progress bar.
#   flash.sh IMAGE DEVICE
# Refuses what is not a whole block device, a disk with anything mounted (or in
# use as swap), the disk the running system is on, and disks larger than
# 128 GiB (set FORCE=1 to write a bigger one anyway).
set -euo pipefail
image=${1:?usage: flash.sh IMAGE DEVICE}
dev=${2:?usage: flash.sh IMAGE DEVICE}
limit_gib=${FLASH_LIMIT_GIB:-128}
die() { echo "flash: $*" >&2; exit 1; }

[ -f "$image" ] || die "$image does not exist (make rpi4)"
[ -b "$dev" ] || die "$dev is not a block device"
name=$(basename "$(readlink -f "$dev")")
[ -d "/sys/block/$name" ] || die "$dev is a partition, not a whole disk (give the disk, e.g. /dev/sdX)"
# Anything of it mounted or used as swap.
in_use=$(lsblk -nro NAME,MOUNTPOINT "/dev/$name" | awk '$2 != "" {print "/dev/" $1 " on " $2}')
[ -z "$in_use" ] || die "$dev is in use: $in_use (unmount it first)"
# The disk the running system is on.
root_src=$(findmnt -nro SOURCE / || true)
if [ -n "$root_src" ] && [ -b "$root_src" ]; then
  root_disk=$(lsblk -nro PKNAME "$root_src" 2>/dev/null | head -1)
  if [ "$root_disk" = "$name" ] || [ "$(basename "$root_src")" = "$name" ]; then
    die "$dev holds the running system's root file system"
  fi
fi
size=$(( $(cat "/sys/block/$name/size") * 512 ))
if [ "$size" -gt $(( limit_gib << 30 )) ] && [ "${FORCE:-0}" != 1 ]; then
  die "$dev is $(( size >> 30 )) GiB, more than $limit_gib GiB: not an SD card? (FORCE=1 to write it anyway)"
fi
[ "$(stat -c %s "$image")" -le "$size" ] || die "$image is larger than $dev"

echo "flash: writing $image to $dev ($(( size >> 20 )) MiB, $(lsblk -ndo MODEL "$dev" 2>/dev/null || true))"
dd if="$image" of="$dev" bs=4M conv=fsync status=progress
sync
echo "flash: done; the first boot formats the data partition"
