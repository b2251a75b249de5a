#!/usr/bin/env bash
# The twin's root filesystem image from a tree, the one way every script makes it:
#   twin-squashfs.sh TREE OUT
# zstd, every file owned by root, time stamps from TREE/etc/trellis/release
# (TRELLIS_BUILD_TIME; the same tree gives the same bytes), and the files that
# change from build to build last (board/qemu-aarch64/squashfs.sort): a change to
# them moves no other file's blocks, so RAUC's adaptive update fetches little more
# than what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:?usage: twin-squashfs.sh TREE OUT}
out=${2:?usage: twin-squashfs.sh TREE OUT}
epoch=$(sed -n 's/^TRELLIS_BUILD_TIME=//p' "$tree/etc/trellis/release" 2>/dev/null || true)
[ -n "$epoch" ] || { echo "twin-squashfs: $tree/etc/trellis/release has no TRELLIS_BUILD_TIME" >&2; exit 1; }
rm -f "$out"
SOURCE_DATE_EPOCH=$epoch mksquashfs "$tree" "$out" -comp zstd -all-root -noappend -quiet -no-progress \
  -sort board/qemu-aarch64/squashfs.sort >/dev/null
