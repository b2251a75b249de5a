#!/usr/bin/env bash
# The twin's root filesystem image from a tree, the one way every script makes it:
#   twin-squashfs.sh TREE OUT
# zstd, every file owned by root, time stamps from TREE/etc/trellis/release
# (TRELLIS_BUILD_TIME; the same tree gives the same bytes), and the files that
# change from build to build last (board/qemu-aarch64/squashfs.sort): a change to
# them moves no other file's blocks, so RAUC's adaptive update fetches little more
# than what changed.
#   twin-squashfs.sh --delta BASE NEW OUT
# The firmware delta (trellis-delta) from image BASE to image NEW, both made as
# above: its recipe is these options, NEW's time stamp and the sort file, and it is
# checked to rebuild NEW from BASE bit for bit before it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-comp zstd -all-root -noappend -quiet -no-progress)
sort_file=board/qemu-aarch64/squashfs.sort
if [ "${1:-}" = --delta ]; then
  base=${2:?usage: twin-squashfs.sh --delta BASE NEW OUT}
  new=${3:?usage: twin-squashfs.sh --delta BASE NEW OUT}
  out=${4:?usage: twin-squashfs.sh --delta BASE NEW OUT}
  delta=${TRELLIS_DELTA:-target/debug/trellis-delta}
  [ -x "$delta" ] || { echo "twin-squashfs: $delta is missing (make cli)" >&2; exit 1; }
  epoch=$(unsquashfs -cat "$new" etc/trellis/release | sed -n 's/^TRELLIS_BUILD_TIME=//p')
  [ -n "$epoch" ] || { echo "twin-squashfs: $new has no TRELLIS_BUILD_TIME in etc/trellis/release" >&2; exit 1; }
  exec "$delta" make --base "$base" --new "$new" --out "$out" --env "SOURCE_DATE_EPOCH=$epoch" --sort "$sort_file" \
    -- "${args[@]}"
fi
tree=${1:?usage: twin-squashfs.sh TREE OUT}
out=${2:?usage: twin-squashfs.sh TREE OUT}
epoch=$(sed -n 's/^TRELLIS_BUILD_TIME=//p' "$tree/etc/trellis/release" 2>/dev/null || true)
[ -n "$epoch" ] || { echo "twin-squashfs: $tree/etc/trellis/release has no TRELLIS_BUILD_TIME" >&2; exit 1; }
rm -f "$out"
SOURCE_DATE_EPOCH=$epoch mksquashfs "$tree" "$out" "${args[@]}" -sort "$sort_file" >/dev/null
