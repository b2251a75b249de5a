#!/usr/bin/env bash
# Assemble the twin's root filesystem as a squashfs:
#   the Rust device binaries (release, aarch64) + rootfs-overlay/ + the board's
#   files + RAUC with streaming (scripts/rauc-build.sh) + the programs dbus-daemon,
#   mkfs.f2fs/fsck.f2fs, mkfs.vfat, tc and busybox from Debian's arm64 packages, with exactly
#   the shared libraries they need.
#   twin-rootfs.sh BUILD_DIR     (reads BUILD_DIR/apps/*.wasm, BUILD_DIR/twin/Image.modules and
#                                 the RAUC keyring BUILD_DIR/keys/ca.cert.pem or $RAUC_KEYRING)
# Writes BUILD_DIR/twin/rootfs.squashfs. The .debs are cached by package version in
# ${TRELLIS_CACHE:-~/.cache/trellis}/debs; one download into the cache at a time (flock).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: twin-rootfs.sh BUILD_DIR}
board=board/qemu-aarch64
bins=target/aarch64-unknown-linux-gnu/release
out=$build/twin
stage=$out/rootfs
sysroot=$out/debian
cache=${TRELLIS_CACHE:-$HOME/.cache/trellis}/debs
readelf=aarch64-linux-gnu-readelf
strip=aarch64-linux-gnu-strip

for f in "$bins/trellis-init" "$bins/trellis-runtime" "$bins/trellis-boot" "$bins/trellis-delta" "$bins/trellis"; do
  [ -x "$f" ] || { echo "twin-rootfs: $f is missing (make cross-release)" >&2; exit 1; }
done
ls "$build"/apps/*.wasm >/dev/null 2>&1 || { echo "twin-rootfs: no apps in $build/apps (make apps)" >&2; exit 1; }

# 1. The Debian packages, downloaded once per version (scripts/debs.sh).
# shellcheck source=scripts/debs.sh
. scripts/debs.sh
mapfile -t packages < <(debs_list "$board/debian-packages.txt")
debs_extract "$cache" "$sysroot" "${packages[@]}"

# 2. The tree.
rm -rf "$stage"; mkdir -p "$stage"
for d in proc sys dev run tmp data mnt root etc/trellis usr/bin usr/sbin usr/share/trellis/apps \
  lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu bin sbin var; do
  mkdir -p "$stage/$d"
done
ln -s /tmp "$stage/var/tmp"
ln -s /run "$stage/var/run"
install -m 0755 "$bins/trellis-init" "$stage/sbin/init"
install -m 0755 "$bins/trellis-runtime" "$stage/usr/bin/trellis-runtime"
install -m 0755 "$bins/trellis-boot" "$stage/usr/bin/trellis-boot"
install -m 0755 "$bins/trellis-delta" "$stage/usr/bin/trellis-delta"
install -m 0755 "$bins/trellis" "$stage/usr/bin/trellis"
"$strip" "$stage/sbin/init" "$stage/usr/bin/trellis-runtime" "$stage/usr/bin/trellis-boot" "$stage/usr/bin/trellis-delta" "$stage/usr/bin/trellis"
cp -a rootfs-overlay/. "$stage/"
rm -f "$stage/README.md"
# The board's configuration, keyring and release file, as Buildroot's post-build hook
# puts them (build time: now, or SOURCE_DATE_EPOCH; the development CA as the keyring
# unless RAUC_KEYRING names a production one).
keyring=${RAUC_KEYRING:-$build/keys/ca.cert.pem}
[ -f "$keyring" ] || { echo "twin-rootfs: no RAUC keyring at $keyring (scripts/dev-keys.sh $build/keys)" >&2; exit 1; }
# BINARIES_DIR: genimage's inputs that are not the board's (the kernel), for the
# list of the boot slots' files post-build.sh makes.
[ -f "$out/Image" ] || { echo "twin-rootfs: $out/Image is missing (scripts/twin-kernel.sh)" >&2; exit 1; }
RAUC_KEYRING=$keyring APP_TRUST_KEY=${APP_TRUST_KEY:-$build/keys/apps.pub} BINARIES_DIR=$out \
  board/rpi4/post-build.sh "$stage" qemu-aarch64
cp "$build"/apps/*.wasm "$stage/usr/share/trellis/apps/"
if [ -d "$out/Image.modules/lib/modules" ]; then
  cp -a "$out/Image.modules/lib/modules" "$stage/lib/"
fi

# Programs from the Debian packages (path in the package = path in the rootfs).
programs=(usr/bin/dbus-daemon sbin/mkfs.f2fs sbin/fsck.f2fs sbin/mkfs.vfat bin/busybox usr/sbin/chronyd
  usr/bin/gpioinfo usr/bin/gpioget usr/bin/gpioset usr/bin/gpiomon sbin/tc usr/bin/mksquashfs usr/bin/unsquashfs)
for p in "${programs[@]}"; do
  [ -e "$sysroot/$p" ] || { echo "twin-rootfs: $p is not in the Debian packages" >&2; exit 1; }
  mkdir -p "$stage/$(dirname "$p")"
  cp -L "$sysroot/$p" "$stage/$p"
done
cp -a "$sysroot/usr/share/dbus-1" "$stage/usr/share/"
scripts/rauc-build.sh "$out/rauc"
install -m 0755 "$out/rauc" "$stage/usr/bin/rauc"
"$strip" "$stage/usr/bin/rauc"
mkdir -p "$stage/etc/dbus-1"

# Shared libraries: the closure of what every ELF file in the tree needs.
find_lib() {
  local d
  for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do
    if [ -e "$sysroot/$d/$1" ]; then echo "$d/$1"; return 0; fi
  done
  return 1
}
declare -A have=()
queue=()
while IFS= read -r -d '' f; do
  if head -c4 "$f" | grep -q ELF; then queue+=("$f"); fi
done < <(find "$stage" -type f -print0)
while ((${#queue[@]})); do
  f=${queue[0]}; queue=("${queue[@]:1}")
  while IFS= read -r soname; do
    [ -n "${have[$soname]:-}" ] && continue
    rel=$(find_lib "$soname") || { echo "twin-rootfs: $f needs $soname, which no package in $board/debian-packages.txt has" >&2; exit 1; }
    have[$soname]=1
    cp -L "$sysroot/$rel" "$stage/$rel"
    queue+=("$stage/$rel")
  done < <("$readelf" -d "$f" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p')
done
ln -sf aarch64-linux-gnu/ld-linux-aarch64.so.1 "$stage/lib/ld-linux-aarch64.so.1"

# busybox's applets, where nothing else has the name.
while IFS= read -r applet; do
  [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ] || { mkdir -p "$stage/$(dirname "$applet")"; ln -s /bin/busybox "$stage/$applet"; }
done < <(qemu-aarch64-static "$stage/bin/busybox" --list-full)

# 3. Every program runs: checked under qemu-user against this tree only.
for p in "sbin/init --version" "usr/bin/trellis-runtime --version" "usr/bin/trellis-boot --version" "usr/bin/trellis-delta --version" \
  "usr/bin/mksquashfs -version" "usr/bin/trellis --version" "usr/bin/rauc --version" \
  "usr/bin/dbus-daemon --version" "sbin/mkfs.f2fs -V" "usr/sbin/chronyd --version"; do
  read -r -a cmd <<<"$p"
  if ! qemu-aarch64-static -L "$stage" "$stage/${cmd[0]}" "${cmd[@]:1}" >/dev/null 2>&1; then
    echo "twin-rootfs: /${cmd[0]} does not run from the new root filesystem:" >&2
    qemu-aarch64-static -L "$stage" "$stage/${cmd[0]}" "${cmd[@]:1}" >&2 || true
    exit 1
  fi
done

# 4. The image.
scripts/twin-squashfs.sh "$stage" "$out/rootfs.squashfs"
echo "twin-rootfs: $out/rootfs.squashfs ($(du -h --apparent-size "$out/rootfs.squashfs" | cut -f1), $(du -sh --apparent-size "$stage" | cut -f1) unpacked)"
