#!/usr/bin/env bash
# Make the signed RAUC update bundle (verity format) from the twin's slot images:
#   twin-bundle.sh BUILD_DIR [OUT]   ->  OUT (default BUILD_DIR/twin/update.raucb)
# Compatible string from board/qemu-aarch64/rauc/system.conf (or $COMPATIBLE), version
# from `git describe` (or $VERSION). Signed with the development keys
# (scripts/dev-keys.sh) unless RAUC_KEY and RAUC_CERT name production ones.
# BOOT_IMAGE and ROOTFS_IMAGE replace the slot images (scripts/twin-broken-bundle.sh).
# The boot slot goes into the bundle as its files (boot.tar, taken out of the FAT image
# with mtools): RAUC formats the slot and unpacks them, writing the files (the kernel,
# about 8 MiB) instead of the whole 64 MiB image.
# The description ends with the app interface the bundle's runtime provides (wit/trellis.wit's
# package, `apps: trellis:app@0.1.2`), where `trellis fleet release create` reads it into the
# release (a field of the description, which every RAUC reads, rather than a [meta] section,
# which the host's RAUC 1.8 that makes the bundle does not write); APP_INTERFACE replaces it.
# DELTA_FROM names the root filesystem image of a release the bundle updates from: the
# bundle then carries the firmware delta from it (rootfs.delta, scripts/twin-squashfs.sh
# --delta), from which a device running that release rebuilds the new image in the
# bundle's slot hook (hooks=pre-install) instead of fetching its blocks. DELTA_WITH names
# the script that makes it with the recipe that packed the images: scripts/twin-squashfs.sh
# (the default, the twin's own images) or scripts/br-squashfs.sh (Buildroot's).
# Needs the image built first (make twin-image).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: twin-bundle.sh BUILD_DIR [OUT]}
out=${2:-$build/twin/update.raucb}
board=board/qemu-aarch64
twin=$build/twin
command -v rauc >/dev/null || { echo "twin-bundle: rauc is missing (apt-get install rauc)" >&2; exit 1; }
boot_image=${BOOT_IMAGE:-$twin/boot.vfat}
rootfs_image=${ROOTFS_IMAGE:-$twin/rootfs.squashfs}
for f in "$boot_image" "$rootfs_image"; do
  [ -f "$f" ] || { echo "twin-bundle: $f is missing (make twin-image)" >&2; exit 1; }
done
key=${RAUC_KEY:-$build/keys/signing.key.pem}
cert=${RAUC_CERT:-$build/keys/signing.cert.pem}
keyring=${RAUC_KEYRING:-$build/keys/ca.cert.pem}
if [ ! -f "$key" ] || [ ! -f "$cert" ]; then scripts/dev-keys.sh "$build/keys" >/dev/null; fi

compatible=${COMPATIBLE:-$(sed -n 's/^compatible=//p' "$board/rauc/system.conf")}
version=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo unknown)}
app_interface=${APP_INTERFACE:-$(sed -n 's/^package trellis:app@\(.*\);$/\1/p' wit/trellis.wit)}
[ -n "$app_interface" ] || { echo "twin-bundle: wit/trellis.wit names no package trellis:app@VERSION" >&2; exit 1; }
content=$(mktemp -d "${TMPDIR:-/tmp}/trellis-bundle.XXXXXX")
trap 'rm -rf "$content"' EXIT
mkdir "$content/boot"
mcopy -s -m -n -i "$boot_image" '::*' "$content/boot/" \
  || { echo "twin-bundle: could not read the files of $boot_image (a FAT image, mtools)" >&2; exit 1; }
[ -f "$content/boot/cmdline.txt" ] || { echo "twin-bundle: $boot_image has no cmdline.txt" >&2; exit 1; }
scripts/boot-tar.sh "$content/boot" "$content/boot.tar"
rm -rf "${content:?}/boot"
cp "$rootfs_image" "$content/rootfs.squashfs"
if [ -n "${DELTA_FROM:-}" ]; then
  [ -f "$DELTA_FROM" ] || { echo "twin-bundle: DELTA_FROM=$DELTA_FROM is missing" >&2; exit 1; }
  "${DELTA_WITH:-scripts/twin-squashfs.sh}" --delta "$DELTA_FROM" "$rootfs_image" "$content/rootfs.delta"
fi
cp "$board/rauc/hook.sh" "$content/hook.sh"
chmod +x "$content/hook.sh"
cat >"$content/manifest.raucm" <<MANIFEST
[update]
compatible=$compatible
version=$version
description=Trellis for $compatible; apps: trellis:app@$app_interface
build=$(date -u +%Y%m%d%H%M%S)

[bundle]
format=verity

[hooks]
filename=hook.sh

[image.boot]
filename=boot.tar
hooks=post-install

[image.rootfs]
filename=rootfs.squashfs
adaptive=block-hash-index
hooks=pre-install
MANIFEST
rm -f "$out"
rauc bundle --cert="$cert" --key="$key" --keyring="$keyring" "$content" "$out" >/dev/null
echo "twin-bundle: $out ($(du -h --apparent-size "$out" | cut -f1), $compatible $version)"
