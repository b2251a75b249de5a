#!/usr/bin/env bash
# Tests of scripts/flash.sh (make test): what it refuses, and a real write to a
# loop device. The loop-device part needs root and losetup; without them it is
# skipped with a note (the refusals of non-devices still run).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-flash.XXXXXX")
loop=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  if mountpoint -q "$work/mnt" 2>/dev/null; then umount "$work/mnt"; fi
  if [ -n "$loop" ]; then losetup -d "$loop"; fi
  rm -rf "$work"
}
trap cleanup EXIT
fails=0
expect_refusal() { # WHY ARGS...: flash.sh must fail and say WHY
  local why=$1; shift
  local out
  if out=$("$@" 2>&1); then echo "test-flash: not refused ($why): $*" >&2; fails=1; return; fi
  grep -q -- "$why" <<<"$out" || { echo "test-flash: refused without '$why': $out" >&2; fails=1; }
}
head -c $((3 << 20)) /dev/urandom >"$work/card.img"
truncate -s 32M "$work/disk"

expect_refusal "does not exist" scripts/flash.sh "$work/none.img" /dev/null
expect_refusal "is not a block device" scripts/flash.sh "$work/card.img" "$work/disk"

if [ "$(id -u)" = 0 ] && loop=$(losetup -f --show "$work/disk" 2>/dev/null); then
  mkfs.ext4 -q "$loop"
  mkdir -p "$work/mnt"
  if mount "$loop" "$work/mnt" 2>/dev/null; then
    expect_refusal "is in use" scripts/flash.sh "$work/card.img" "$loop"
    umount "$work/mnt"
  else
    echo "test-flash: cannot mount here: the in-use refusal is skipped"
  fi
  expect_refusal "more than 0 GiB" env FLASH_LIMIT_GIB=0 scripts/flash.sh "$work/card.img" "$loop"
  FLASH_LIMIT_GIB=0 FORCE=1 scripts/flash.sh "$work/card.img" "$loop" >/dev/null 2>&1 \
    || { echo "test-flash: FORCE=1 did not write" >&2; fails=1; }
  cmp -n $((3 << 20)) "$work/card.img" "$loop" || { echo "test-flash: the device does not hold the image" >&2; fails=1; }
else
  echo "test-flash: not root or no loop devices: the write to a loop device is skipped"
fi
[ "$fails" = 0 ] && echo "test-flash: ok"
exit "$fails"
