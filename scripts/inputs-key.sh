#!/usr/bin/env bash
# The key of a build step's inputs: one SHA-256 over the names, modes and
# contents of every file (and the targets of the symbolic links) under the
# paths given, files or directories. A path that does not exist counts as
# such.
#   inputs-key.sh PATH...   ->  64 hex digits
# A step keeps the key beside its output and skips its work when the key is
# the same (scripts/twin-image.sh).
set -euo pipefail
for p in "$@"; do
  if [ -e "$p" ] || [ -L "$p" ]; then
    find "$p" \( -type f -o -type l \) -printf '%p %m %l\n' | LC_ALL=C sort
    find "$p" -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum
  else
    echo "missing: $p"
  fi
done | sha256sum | cut -c1-64
