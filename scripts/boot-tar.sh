#!/usr/bin/env bash
# The boot slot's files as an update bundle carries them:
#   boot-tar.sh DIR OUT   ->  OUT, a tar of what DIR holds
# Only names and bytes count (sorted, owned by root, mode 0644, mtime 0): the
# same boot files make the same boot.tar in every build, so the image can name
# it in RAUC's status before any bundle exists (rootfs-overlay/usr/lib/trellis/rauc-seed.sh),
# and RAUC skips a boot slot that already holds it.
set -euo pipefail
dir=${1:?usage: boot-tar.sh DIR OUT}
out=${2:?usage: boot-tar.sh DIR OUT}
# The top-level names, not ".": unpacking must not try to change the slot's root directory.
mapfile -t files < <(cd "$dir" && ls -A)
((${#files[@]})) || { echo "boot-tar: $dir is empty" >&2; exit 1; }
tar --sort=name --owner=0 --group=0 --numeric-owner --format=gnu --mtime=@0 --mode=a=r,u+w \
  -cf "$out" -C "$dir" "${files[@]}"
