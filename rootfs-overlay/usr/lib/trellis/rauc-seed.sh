#!/bin/sh
# Run by init before RAUC's service starts (init.toml). When RAUC's status file
# is missing (the first boot, or a data partition formatted again), it names,
# for each boot slot that holds exactly what installing this build's boot.tar
# would have left there (the image made both so), that boot.tar: RAUC then
# skips the slot (install-same=false) for a bundle carrying the same boot files,
# and a streamed install does not fetch them. A slot whose files differ in any
# way (another build's, a damaged or half-written one) is not named, and RAUC
# writes it as before. It never stops RAUC from starting: what it cannot do it
# says, and leaves the status file alone.
#   rauc-seed.sh [SEED [STATUS [SYSTEM_CONF]]]
# SEED: the image's list (scripts/boot-slots.sh, run by board/rpi4/post-build.sh): "tar SHA256 SIZE", then one
# "SLOT SHA256 FILE" per file each boot slot must hold and nothing else.
set -u
seed=${1:-/usr/share/trellis/boot-slots}
status=${2:-/data/trellis/rauc.status}
conf=${3:-/etc/rauc/system.conf}
say() { echo "rauc-seed: $*" >&2; }

[ -e "$status" ] && exit 0
[ -f "$seed" ] || exit 0
read -r tar_sha tar_size <<EOF
$(sed -n 's/^tar //p' "$seed")
EOF
if [ -z "${tar_sha:-}" ] || [ -z "${tar_size:-}" ]; then
  say "$seed names no boot.tar"
  exit 0
fi
compatible=$(sed -n 's/^compatible=//p' "$conf")

tmp=$status.seed
if ! { mkdir -p "$(dirname "$status")" && : >"$tmp"; }; then
  say "cannot write $tmp"
  exit 0
fi
slots=$(sed -n 's/^\(boot\.[0-9]*\) .*/\1/p' "$seed" | sort -u)
for slot in $slots; do
  device=$(sed -n "/^\[slot\.$slot\]/,/^\[/s/^device=//p" "$conf")
  [ -n "$device" ] || { say "$conf has no slot $slot"; continue; }
  mnt=/run/trellis/seed.$slot
  mkdir -p "$mnt"
  if ! mount -t vfat -o ro "$device" "$mnt" 2>/dev/null; then
    say "$slot ($device) cannot be mounted: not named"
    continue
  fi
  want=$(sed -n "s/^$slot //p" "$seed" | sort)
  have=$(cd "$mnt" && find . -type f | sed 's|^\./||' | sort | while IFS= read -r f; do
    printf '%s %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$f"
  done | sort)
  # Left mounted, the slot could not be formatted by the next install.
  if ! umount "$mnt"; then
    umount -l "$mnt" || say "$slot ($device) is still mounted on $mnt"
    say "$slot ($device) could not be unmounted: not named"
    continue
  fi
  if [ "$want" = "$have" ]; then
    printf '[slot.%s]\nbundle.compatible=%s\nsha256=%s\nsize=%s\nstatus=ok\n\n' \
      "$slot" "$compatible" "$tar_sha" "$tar_size" >>"$tmp"
    say "$slot holds this image's boot files: named"
  else
    say "$slot does not hold this image's boot files: not named"
  fi
done
# Whole or not at all: written, synced, renamed, and the rename synced.
if [ -s "$tmp" ] && sync "$tmp" && mv "$tmp" "$status" && sync "$(dirname "$status")"; then
  exit 0
fi
rm -f "$tmp"
exit 0
