#!/usr/bin/env bash
# The files genimage puts in a FAT image, as genimage.cfg names them:
#   boot-slot-files.sh GENIMAGE_CFG IMAGE   ->  one line per file: NAME SOURCE
# (`files = { "A", "B" }` gives `A A` and `B B`; `file NAME { image = "SRC" }`
# gives `NAME SRC`). The one place that reads what a boot slot holds, for
# the image's list of its boot files (scripts/twin-rootfs.sh).
set -euo pipefail
cfg=${1:?usage: boot-slot-files.sh GENIMAGE_CFG IMAGE}
image=${2:?usage: boot-slot-files.sh GENIMAGE_CFG IMAGE}
listed=$(awk -v image="$image" '
  $1 == "image" && $2 == image && $3 == "{" { inside = 1; next }
  inside && /^}/ { exit }
  inside && /^[[:space:]]*files[[:space:]]*=[[:space:]]*\{.*\}/ {
    s = $0; sub(/^[^{]*\{/, "", s); sub(/\}.*$/, "", s)
    n = split(s, names, ",")
    for (i = 1; i <= n; i++) { gsub(/[[:space:]"]/, "", names[i]); if (names[i] != "") print names[i], names[i] }
  }
  inside && $1 == "file" && match($0, /image[[:space:]]*=[[:space:]]*"[^"]+"/) {
    src = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", src); sub(/"$/, "", src)
    print $2, src
  }' "$cfg")
[ -n "$listed" ] || { echo "boot-slot-files: $cfg names no files in image $image" >&2; exit 1; }
printf '%s\n' "$listed"
