#!/usr/bin/env bash
# Buildroot post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT):
#   post-image.sh BINARIES_DIR BOARD      BOARD: rpi4 or qemu-aarch64
# Makes the slot images, the card image (genimage, board/BOARD/genimage.cfg:
# sdcard.img for the Pi, trellis.img for the twin) and the signed update
# bundle (update.raucb, scripts/twin-bundle.sh with the board's compatible). With
# DELTA_FROM (the root filesystem image of the release devices run now) the bundle also
# carries the firmware delta from it, made with Buildroot's recipe (scripts/br-squashfs.sh).
set -euo pipefail
images=${1:?usage: post-image.sh BINARIES_DIR BOARD}
board_name=${2:?usage: post-image.sh BINARIES_DIR BOARD}
top=$(cd "$(dirname "$0")/../.." && pwd)
board=$top/board/$board_name
: "${HOST_DIR:?post-image: HOST_DIR is not set (run by Buildroot)}"
export PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"

input=$images/genimage.input
rm -rf "$input" "$images/genimage.tmp"
mkdir -p "$input"
cp "$images/Image" "$images/rootfs.squashfs" "$board"/{cmdline-a.txt,cmdline-b.txt,autoboot.txt} "$input/"
head -c 1048576 /dev/zero | tr '\0' '\377' >"$input/data-head.img"
case $board_name in
  rpi4)
    cp "$images/bcm2711-rpi-4-b.dtb" "$input/"
    cp -r "$images/rpi-firmware" "$input/rpi-firmware"
    disk=sdcard.img
    ;;
  qemu-aarch64)
    cp "$board/config.txt" "$input/"
    disk=trellis.img
    ;;
  *) echo "post-image: unknown board '$board_name'" >&2; exit 1 ;;
esac
genimage --rootpath "$(mktemp -d)" --tmppath "$images/genimage.tmp" --inputpath "$input" \
  --outputpath "$images" --config "$board/genimage.cfg"
cp "$images/boot-a.vfat" "$images/boot.vfat"

compatible=$(sed -n 's/^compatible=//p' "$board/rauc/system.conf")
BOOT_IMAGE=$images/boot.vfat ROOTFS_IMAGE=$images/rootfs.squashfs COMPATIBLE=$compatible \
  DELTA_WITH=$top/scripts/br-squashfs.sh \
  "$top/scripts/twin-bundle.sh" "$top/build" "$images/update.raucb"
echo "post-image: $images/$disk and $images/update.raucb"
