#!/usr/bin/env bash
# Assemble the device twin's SD-card image with genimage:
#   twin-image.sh BUILD_DIR   ->  BUILD_DIR/twin/trellis.img
# Needs the kernel (scripts/twin-kernel.sh), the release aarch64 binaries
# (make cross-release) and the packed apps (make apps); `make twin-image` does all.
# The image is made again only when one of its inputs changed (scripts/inputs-key.sh;
# the key is kept in BUILD_DIR/twin/inputs.key): `make test` asks for it from the
# twin's stories, `make qemu` and `make fleet-demo`, and builds it once.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: twin-image.sh BUILD_DIR}
board=board/qemu-aarch64
out=$build/twin

scripts/dev-keys.sh "$build/keys"
scripts/twin-kernel.sh "$out/Image"
key=$(scripts/inputs-key.sh "$0" scripts/twin-rootfs.sh scripts/twin-squashfs.sh scripts/debs.sh scripts/rauc-build.sh scripts/boot-tar.sh scripts/boot-slot-files.sh scripts/boot-slots.sh board/rpi4/post-build.sh "$board" rootfs-overlay \
  buildroot-external/patches/rauc \
  target/aarch64-unknown-linux-gnu/release/trellis{-init,-runtime,-boot,-delta,} "$build/apps" \
  "${RAUC_KEYRING:-$build/keys/ca.cert.pem}" "${APP_TRUST_KEY:-$build/keys/apps.pub}" "$out/Image" "$out/Image.modules")
if [ -f "$out/trellis.img" ] && [ -f "$out/boot.vfat" ] && [ -f "$out/rootfs.squashfs" ] \
  && [ "$(cat "$out/inputs.key" 2>/dev/null)" = "$key" ]; then
  echo "twin-image: $out/trellis.img is up to date"
  exit 0
fi
rm -f "$out/inputs.key"
scripts/twin-rootfs.sh "$build"

input=$out/genimage-input
rm -rf "$input" "$out/genimage-tmp" "$out/genimage-root" "$out/images"
mkdir -p "$input" "$out/images" "$out/genimage-root"
cp "$out/Image" "$out/rootfs.squashfs" "$board"/{config.txt,cmdline-a.txt,cmdline-b.txt,autoboot.txt} "$input/"
# First boot formats a data partition that holds no file system (Nerves does the same).
head -c 1048576 /dev/zero | tr '\0' '\377' >"$input/data-head.img"
genimage --config "$board/genimage.cfg" --inputpath "$input" --outputpath "$out/images" \
  --tmppath "$out/genimage-tmp" --rootpath "$out/genimage-root" >"$out/genimage.log" 2>&1 \
  || { cat "$out/genimage.log" >&2; echo "twin-image: genimage failed" >&2; exit 1; }
mv "$out/images/trellis.img" "$out/trellis.img"
# The slot images an update bundle carries (scripts/twin-bundle.sh).
mv "$out/images/boot-a.vfat" "$out/boot.vfat"
rm -rf "$out/genimage-tmp" "$out/genimage-root" "$input"
echo "$key" >"$out/inputs.key"
echo "twin-image: $out/trellis.img"
