#!/usr/bin/env bash
# Our patches of Buildroot's packages (buildroot-external/patches/PACKAGE/VERSION/,
# BR2_GLOBAL_PATCH_DIR) against a Buildroot tree:
#   br-patches.sh BUILDROOT_DIR
# Buildroot applies PACKAGE/VERSION/*.patch only to that version of PACKAGE and
# says nothing when the version differs, so a Buildroot whose PACKAGE is another
# version would build it without our fixes: refused here, naming both versions.
# Run by scripts/buildroot.sh before it builds and by scripts/br-check.sh.
set -euo pipefail
br=$(realpath -m "${1:?usage: br-patches.sh BUILDROOT_DIR}")
cd "$(dirname "$0")/.."
fail=0
for dir in buildroot-external/patches/*/*/; do
  [ -d "$dir" ] || continue
  version=$(basename "$dir")
  package=$(basename "$(dirname "$dir")")
  mk=$br/package/$package/$package.mk
  var=$(tr 'a-z-' 'A-Z_' <<<"$package")_VERSION
  ships=$(sed -n "s/^$var = //p" "$mk" 2>/dev/null || true)
  if [ "$ships" != "$version" ]; then
    echo "br-patches: $dir patches $package $version, but $br ships ${ships:-no $package}: its fixes would not be applied (port them)" >&2
    fail=1
  fi
done
exit "$fail"
