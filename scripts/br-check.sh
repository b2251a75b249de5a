#!/usr/bin/env bash
# Checks of the Buildroot external tree that need no Buildroot download (make test):
#   1. every package is Config.in + NAME.mk + NAME.hash, and Config.in sources each;
#   2. every BR2_ symbol a defconfig sets or unsets is one Buildroot (the pinned
#      release: buildroot-external/br2-symbols.txt) or our Config.in files define;
#   3. the kernel options the Pi's and the twin's fragments share are identical, 48-bit
#      addresses among them; our patches of Buildroot's packages are in Buildroot's shape.
# With BUILDROOT=DIR (a Buildroot tree of the pinned release; make br-check), also
#   4. `make <defconfig>` with our tree keeps every symbol the defconfig sets, our
#      patches are for the versions of the packages it ships (scripts/br-patches.sh), the
#      firmware delta's recipe (scripts/br-squashfs.sh) follows its fs/squashfs/squashfs.mk
#      and takes each defconfig's settings, and
#   5. Buildroot's utils/check-package passes on our files.
set -euo pipefail
cd "$(dirname "$0")/.."
ext=buildroot-external
fail=0
err() { echo "br-check: $*" >&2; fail=1; }

# 1. Packages.
for dir in "$ext"/package/*/; do
  name=$(basename "$dir")
  for f in Config.in "$name.mk" "$name.hash"; do
    [ -f "$dir/$f" ] || err "package $name has no $f"
  done
  grep -q "package/$name/Config.in\"" "$ext/Config.in" || err "$ext/Config.in does not source package/$name/Config.in"
done

# 2. Symbols.
ours=$(grep -hoE '^[[:space:]]*(menu)?config[[:space:]]+BR2_[A-Za-z0-9_]+' "$ext"/Config.in "$ext"/package/*/Config.in | awk '{print $2}')
known=$( (grep -v '^#' "$ext/br2-symbols.txt"; echo "$ours") | sort -u)
for cfg in "$ext"/configs/*_defconfig; do
  while read -r sym; do
    grep -qxF "$sym" <<<"$known" || err "$(basename "$cfg"): $sym is not a Buildroot $(head -1 "$ext/br2-symbols.txt" | grep -oE '[0-9]{4}\.[0-9.]+') option nor one of ours"
  done < <(sed -nE 's/^(BR2_[A-Za-z0-9_]+)=.*/\1/p; s/^# (BR2_[A-Za-z0-9_]+) is not set$/\1/p' "$cfg")
done

# 2b. Our patches of Buildroot's packages (patches/PACKAGE/VERSION/NNNN-*.patch, in
#     the shape Buildroot's check-package wants: a commit message with Upstream: and
#     Signed-off-by:).
for p in "$ext"/patches/*/*/*; do
  [ -e "$p" ] || continue
  case $(basename "$p") in [0-9][0-9][0-9][0-9]-*.patch) ;; *) err "$p is not named NNNN-*.patch"; continue ;; esac
  grep -q '^Upstream: ' "$p" || err "$p has no Upstream: line"
  grep -q '^Signed-off-by: ' "$p" || err "$p has no Signed-off-by: line"
  grep -q '^diff --git ' "$p" || err "$p changes nothing"
done

# 3. The shared kernel options.
shared() { sed -n '/^# --- shared with/,/^# --- /p' "$1" | grep -E '^(# )?CONFIG_' | sort; }
a=board/qemu-aarch64/linux.fragment b=board/rpi4/linux.fragment
if ! diff <(shared "$a") <(shared "$b") >/dev/null; then
  err "the shared blocks of $a and $b differ:"
  diff <(shared "$a") <(shared "$b") >&2 || true
fi
[ -n "$(shared "$a")" ] || err "$a has no shared block"
# The runtime's pool reserves 4 GiB of address space per app memory, about 1 TiB (docs/runtime.md).
grep -qx 'CONFIG_ARM64_VA_BITS_48=y' <(shared "$a") || err "$a: the kernels need CONFIG_ARM64_VA_BITS_48=y (the runtime's memory pool)"

# 4, 5. Against a Buildroot tree.
if [ -n "${BUILDROOT:-}" ]; then
  [ -f "$BUILDROOT/Makefile" ] || { echo "br-check: BUILDROOT=$BUILDROOT is not a Buildroot tree" >&2; exit 1; }
  out=$(mktemp -d "${TMPDIR:-/tmp}/trellis-br.XXXXXX")
  trap 'rm -rf "$out"' EXIT
  for cfg in "$ext"/configs/*_defconfig; do
    name=$(basename "$cfg")
    make -s -C "$BUILDROOT" O="$out/$name" BR2_EXTERNAL="$PWD/$ext" "$name" >/dev/null \
      || { err "make $name failed"; continue; }
    while IFS= read -r line; do
      grep -qxF "$line" "$out/$name/.config" || err "$name: '$line' did not survive make $name (a dependency is missing)"
    done < <(grep -E '^BR2_[A-Za-z0-9_]+=' "$cfg")
    BR2_CONFIG=$out/$name/.config scripts/br-squashfs.sh --recipe >/dev/null \
      || err "$name: scripts/br-squashfs.sh cannot make a firmware delta's recipe (above)"
  done
  mk=$(sha256sum "$BUILDROOT/fs/squashfs/squashfs.mk" | cut -d' ' -f1)
  grep -q "$mk" scripts/br-squashfs.sh \
    || err "$BUILDROOT/fs/squashfs/squashfs.mk ($mk) is not the one scripts/br-squashfs.sh follows"
  scripts/br-patches.sh "$BUILDROOT" || err "our patches do not match $BUILDROOT's packages (above)"
  # Debian's python3 has python3-magic, which check-package needs (a pyenv one may not).
  py=/usr/bin/python3
  [ -x "$py" ] || py=python3
  (cd "$BUILDROOT" && "$py" ./utils/check-package -b "$OLDPWD/$ext"/Config.in "$OLDPWD/$ext"/external.mk \
    "$OLDPWD/$ext"/package/*/* "$OLDPWD/$ext"/patches/*/*/*) || err "utils/check-package found problems"
fi

[ "$fail" = 0 ] && echo "br-check: $(find "$ext/package" -mindepth 1 -maxdepth 1 -type d | wc -l) packages, $(find "$ext/configs" -name '*_defconfig' | wc -l) defconfigs: ok"
exit "$fail"
