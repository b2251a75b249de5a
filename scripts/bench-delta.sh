#!/usr/bin/env bash
# What a small firmware change costs to fetch, by method, on two real root filesystems:
#   bench-delta.sh BUILD_DIR     (make bench-delta; needs the twin's image: make twin-image)
# The twin's root filesystem (BUILD_DIR/twin/rootfs.squashfs) with its runtime rebuilt for
# aarch64 (release, stripped) from a copy of the source, unchanged (the base) and with one
# line changed, each packed the same way (scripts/twin-squashfs.sh). Base and variants come
# from the same copy: a build from another path names its symbols differently.
#   constant  REBOOT_GRACE 1 s -> 2 s (one immediate in the code)
#   log-line  one tracing::info! line added where the runtime reboots into a trial
# For each: the bytes RAUC's block-hash-index mode fetches (4 KiB blocks of the new image
# found in no slot: the base image), the same for the tree as an EROFS image (lz4hc, 4 KiB
# physical clusters: compressed yet block-aligned), casync's chunk store (64 KiB average
# chunks, zstd, the chunks the base's store lacks), an xdelta3 patch of the image against
# the base, zstd --patch-from of the image, xdelta3 and bsdiff of the runtime binary
# alone, and the firmware delta a bundle carries (trellis-delta: the tree's changed files
# as bsdiff patches, checked to rebuild the image bit for bit), each beside the image and
# the whole bundle. One run.
# Prints a table and writes it to BUILD_DIR/delta/delta.md.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: bench-delta.sh BUILD_DIR}
image=$build/twin/rootfs.squashfs
out=$build/delta
[ -f "$image" ] || { echo "bench-delta: $image is missing (make twin-image)" >&2; exit 1; }
for t in casync xdelta3 zstd unsquashfs mkfs.erofs bsdiff; do
  command -v "$t" >/dev/null || { echo "bench-delta: $t is missing (scripts/setup.sh --bench)" >&2; exit 1; }
done
rm -rf "$out"; mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-delta.XXXXXX")
trap 'rm -rf "$work"' EXIT
# The base and the variants, from one copy of the source (scripts/runtime-variant.sh).
DEVICE_SELECTION=${DEVICE_SELECTION:-} scripts/runtime-variant.sh "$build" "$work/img" base constant log-line
bundle_size=$(stat -c %s "$build/twin/update.raucb" 2>/dev/null || echo 0)

mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; }

# 4 KiB blocks of NEW that are neither zero nor anywhere in OLD (RAUC's block-hash-index).
missing_blocks() {
  python3 - "$1" "$2" <<'PY'
import sys
old = open(sys.argv[1], 'rb').read()
new = open(sys.argv[2], 'rb').read()
have = {old[i:i + 4096] for i in range(0, len(old) - 4095, 4096)}
zero = bytes(4096)
print(sum(1 for i in range(0, len(new), 4096) if new[i:i + 4096] not in have and new[i:i + 4096].ljust(4096, b'\0') != zero))
PY
}


{
  echo "| change | image | RAUC block-hash-index | the same on EROFS | casync (64 KiB chunks) | xdelta3 of the image | zstd --patch-from | xdelta3 of the runtime binary | bsdiff of the runtime binary | trellis-delta (the tree's changes, rebuilt bit for bit) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$out/delta.md"

base=$work/img/base.squashfs
for kind in base constant log-line; do
  rm -rf "$work/new"
  unsquashfs -q -no-progress -d "$work/new" "$work/img/$kind.squashfs" >/dev/null
  mkfs.erofs --quiet -zlz4hc -T"$(sed -n 's/^TRELLIS_BUILD_TIME=//p' "$work/new/etc/trellis/release")" --all-root \
    -U 6f1d1a2e-7c2b-4b7e-9d35-5a1f0c3e2b10 "$work/$kind.erofs" "$work/new" >/dev/null
  if [ "$kind" = base ]; then
    mv "$work/new" "$work/base"
    casync make --store="$work/store" "$work/base.caibx" "$base" >/dev/null 2>&1
    find "$work/store" -name '*.cacnk' -printf '%P\n' | sort >"$work/base.chunks"
    continue
  fi
  image=$work/img/$kind.squashfs
  size=$(stat -c %s "$image")
  blocks=$(( $(missing_blocks "$base" "$image") * 4096 ))
  erofs_blocks=$(( $(missing_blocks "$work/base.erofs" "$work/$kind.erofs") * 4096 ))
  rm -rf "$work/store2"; cp -a "$work/store" "$work/store2"
  casync make --store="$work/store2" "$work/$kind.caibx" "$image" >/dev/null 2>&1
  casync_bytes=$(comm -13 "$work/base.chunks" <(find "$work/store2" -name '*.cacnk' -printf '%P\n' | sort) \
    | (cd "$work/store2" && xargs -r stat -c %s) | awk '{ s += $1 } END { print s + 0 }')
  casync_bytes=$(( casync_bytes + $(stat -c %s "$work/$kind.caibx") ))
  xdelta3 -e -9 -f -s "$base" "$image" "$work/$kind.xd3"
  zstd -q -19 --long=27 --patch-from="$base" -f "$image" -o "$work/$kind.zst" 2>/dev/null
  xdelta3 -e -9 -f -s "$work/base/usr/bin/trellis-runtime" "$work/new/usr/bin/trellis-runtime" "$work/$kind.bin.xd3"
  bsdiff "$work/base/usr/bin/trellis-runtime" "$work/new/usr/bin/trellis-runtime" "$work/$kind.bsdiff"
  scripts/twin-squashfs.sh --delta "$base" "$image" "$work/$kind.delta" >/dev/null
  rm -rf "$work/new"
  row="| $kind | $(mib "$size") (EROFS $(mib "$(stat -c %s "$work/$kind.erofs")")) |"
  for b in "$blocks" "$erofs_blocks" "$casync_bytes" "$(stat -c %s "$work/$kind.xd3")" "$(stat -c %s "$work/$kind.zst")" \
    "$(stat -c %s "$work/$kind.bin.xd3")" "$(stat -c %s "$work/$kind.bsdiff")" "$(stat -c %s "$work/$kind.delta")"; do
    row="$row $(mib "$b") ($(pct "$b" "$size") of the image$( [ "$bundle_size" -gt 0 ] && echo ", $(pct "$b" "$bundle_size") of the bundle")) |"
  done
  echo "$row" >>"$out/delta.md"
done
cat "$out/delta.md"
