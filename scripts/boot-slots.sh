#!/usr/bin/env bash
# What an image's boot slots hold, for RAUC's status at first boot
# (rootfs-overlay/usr/lib/trellis/rauc-seed.sh):
#   boot-slots.sh GENIMAGE_CFG OUT INPUT_DIR...
# OUT gets "tar SHA256 SIZE", the boot.tar a bundle of this build carries (made
# from boot slot A's files, as scripts/twin-bundle.sh makes it), then one
# "boot.N SHA256 NAME" per file each boot slot holds, as genimage.cfg puts them
# there (scripts/boot-slot-files.sh): a file at the slot's root under its base
# name, a directory with everything under it. genimage's inputs are looked up in
# the INPUT_DIRs in order (the board's directory, then Buildroot's BINARIES_DIR:
# the kernel, the device tree, the Pi's firmware). Run by board/rpi4/post-build.sh.
set -euo pipefail
cfg=$(realpath -m "${1:?usage: boot-slots.sh GENIMAGE_CFG OUT INPUT_DIR...}")
out=$(realpath -m "${2:?usage: boot-slots.sh GENIMAGE_CFG OUT INPUT_DIR...}")
shift 2
(($#)) || { echo "boot-slots: no input directory" >&2; exit 1; }
dirs=()
for d in "$@"; do dirs+=("$(realpath -m "$d")"); done
cd "$(dirname "$0")/.."

input() {
  local d
  for d in "${dirs[@]}"; do
    if [ -e "$d/$1" ]; then echo "$d/$1"; return; fi
  done
  echo "boot-slots: $cfg names $1, which is in none of ${dirs[*]}" >&2
  return 1
}

# A slot's files as genimage puts them there (a link as the file it names), staged in DIR.
stage() {
  local name source path files
  files=$(scripts/boot-slot-files.sh "$cfg" "boot-$1.vfat")
  while read -r name source; do
    path=$(input "$source")
    cp -rL "$path" "$2/$name"
  done <<<"$files"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-boot-slots.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/a" "$work/b"
stage a "$work/a"
stage b "$work/b"
scripts/boot-tar.sh "$work/a" "$work/boot.tar"
mkdir -p "$(dirname "$out")"
{
  echo "tar $(sha256sum <"$work/boot.tar" | cut -d' ' -f1) $(stat -c %s "$work/boot.tar")"
  for slot in 0 1; do
    letter=$( ((slot)) && echo b || echo a)
    (cd "$work/$letter" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | while IFS= read -r f; do
      echo "boot.$slot $(sha256sum <"$f" | cut -d' ' -f1) $f"
    done)
  done
} >"$out.tmp"
mv "$out.tmp" "$out"
