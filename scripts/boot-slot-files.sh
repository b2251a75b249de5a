#!/usr/bin/env bash
# The files genimage puts in a FAT image, as genimage.cfg names them:
#   boot-slot-files.sh GENIMAGE_CFG IMAGE   ->  one line per file: NAME SOURCE
# (`files = { "A", "dir/B" }` gives `A A` and `B dir/B`: genimage puts each at
# the image's root under its base name, a directory with what it holds;
# `file NAME { image = "SRC" }` gives `NAME SRC`). The one place that reads
# what a boot slot holds, for the image's list of its boot files
# (scripts/boot-slots.sh).
set -euo pipefail
cfg=${1:?usage: boot-slot-files.sh GENIMAGE_CFG IMAGE}
image=${2:?usage: boot-slot-files.sh GENIMAGE_CFG IMAGE}
listed=$(awk -v image="$image" '
  function names(s,   n, i, k, part, list) {
    n = split(s, list, ",")
    for (i = 1; i <= n; i++) {
      gsub(/[[:space:]"]/, "", list[i])
      if (list[i] != "") { k = split(list[i], part, "/"); print part[k], list[i] }
    }
  }
  $1 == "image" && $2 == image && $3 == "{" { inside = 1; next }
  inside && /^}/ { exit }
  # files = { ... }, on one line or over several
  inside && !infiles && /^[[:space:]]*files[[:space:]]*=[[:space:]]*\{/ {
    s = $0; sub(/^[^{]*\{/, "", s)
    if (s ~ /\}/) { sub(/\}.*$/, "", s); names(s) } else { infiles = 1; acc = s }
    next
  }
  infiles {
    if ($0 ~ /\}/) { s = $0; sub(/\}.*$/, "", s); names(acc "," s); infiles = 0 } else acc = acc "," $0
    next
  }
  inside && $1 == "file" && match($0, /image[[:space:]]*=[[:space:]]*"[^"]+"/) {
    src = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", src); sub(/"$/, "", src)
    print $2, src
  }' "$cfg")
[ -n "$listed" ] || { echo "boot-slot-files: $cfg names no files in image $image" >&2; exit 1; }
printf '%s\n' "$listed"
