#!/usr/bin/env bash
# The list of Kconfig symbols a Buildroot tree defines, for scripts/br-check.sh:
#   br-symbols.sh BUILDROOT_DIR > buildroot-external/br2-symbols.txt
# Every `config`/`menuconfig` in its Config.in* files except Config.in.legacy
# (options Buildroot removed: a defconfig must not use them).
set -euo pipefail
br=${1:?usage: br-symbols.sh BUILDROOT_DIR}
[ -f "$br/Config.in.legacy" ] || { echo "br-symbols: $br is not a Buildroot tree" >&2; exit 1; }
version=$(sed -n 's/^export BR2_VERSION := //p' "$br/Makefile")
echo "# Kconfig symbols of Buildroot $version (scripts/br-symbols.sh; Config.in.legacy left out)"
find "$br" -name 'Config.in*' ! -name 'Config.in.legacy' -print0 \
  | xargs -0 grep -hoE '^[[:space:]]*(menu)?config[[:space:]]+BR2_[A-Za-z0-9_]+' \
  | awk '{print $2}' | sort -u
