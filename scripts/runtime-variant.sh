#!/usr/bin/env bash
# The twin's root filesystem with its runtime rebuilt from one copy of the source:
#   runtime-variant.sh BUILD_DIR OUT KIND...      KIND: base | constant | log-line
# For each KIND, OUT/KIND.squashfs: BUILD_DIR/twin/rootfs.squashfs with the runtime
# built for aarch64 (release, stripped) from a copy of the checkout, unchanged (base)
# or with one line of firmware/runtime/src/device.rs changed, packed the way every
# twin image is (scripts/twin-squashfs.sh). All kinds come from the same copy, whose
# workspace crates have a version of their own (0.1.0-variant): they build apart from
# the checkout's in the same target directory and never take their place, and the
# images of two kinds differ by the change alone. What the change is:
#   constant  REBOOT_GRACE 1 s -> 2 s (one immediate in the code)
#   log-line  one tracing::info! line added where the runtime reboots into a trial
#             (it logs "rebooting into the trial in 1000 ms")
# Used by make bench-delta and the twin's code-change update test.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: runtime-variant.sh BUILD_DIR OUT KIND...}
out=${2:?usage: runtime-variant.sh BUILD_DIR OUT KIND...}
shift 2
(($#)) || { echo "usage: runtime-variant.sh BUILD_DIR OUT KIND..." >&2; exit 1; }
image=$build/twin/rootfs.squashfs
target=aarch64-unknown-linux-gnu
[ -f "$image" ] || { echo "runtime-variant: $image is missing (make twin-image)" >&2; exit 1; }
top=$(pwd)
bin=$top/target/$target/release/trellis-runtime
[ -x "$bin" ] || { echo "runtime-variant: $bin is missing (make cross-release)" >&2; exit 1; }
for t in unsquashfs mksquashfs aarch64-linux-gnu-strip; do
  command -v "$t" >/dev/null || { echo "runtime-variant: $t is missing (scripts/setup.sh --cross)" >&2; exit 1; }
done
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/trellis-variant.XXXXXX")
# The variants build into the checkout's target directory, with the checkout's package
# selection (DEVICE_SELECTION, the Makefile's; default: the runtime alone), so its
# registry crates are shared. Cargo puts each build's binaries at the same paths (hard
# links to their files in deps/), so the checkout's are kept aside and put back as files
# of their own.
read -r -a selection <<<"${DEVICE_SELECTION:---no-default-features -p trellis-runtime --features trellis-runtime/linux}"
release=$top/target/$target/release
mkdir -p "$work/bins"
find "$release" -maxdepth 1 -type f -perm -u+x -exec cp -a {} "$work/bins/" \;
put_back() {
  local f
  for f in "$work"/bins/*; do
    rm -f "$release/${f##*/}"
    cp -a "$f" "$release/"
  done
  rm -rf "$work"
}
trap put_back EXIT

# The source, copied (not the build trees), its workspace crates given a version of
# their own (above); the registry's crates are shared.
src=$work/src
mkdir -p "$src"
tar -C . --exclude=./target --exclude=./build --exclude=./output --exclude=./.git -cf - . | tar -C "$src" -xf -
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "runtime-variant: Cargo.toml's [workspace.package] has no version" >&2; exit 1; }
sed -i "/^\[workspace.package\]/,/^\[/s/^version = \"$version\"$/version = \"$version-variant\"/" "$src/Cargo.toml"
grep -q "^version = \"$version-variant\"$" "$src/Cargo.toml" \
  || { echo "runtime-variant: could not give the copy a version of its own" >&2; exit 1; }
unsquashfs -q -no-progress -d "$work/tree" "$image" >/dev/null

for kind in "$@"; do
  cp firmware/runtime/src/device.rs "$src/firmware/runtime/src/device.rs"
  case $kind in
    base) ;;
    constant)
      sed -i 's/^pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);/pub const REBOOT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);/' \
        "$src/firmware/runtime/src/device.rs" ;;
    log-line)
      sed -i 's/^        std::thread::sleep(REBOOT_GRACE);/        tracing::info!("rebooting into the trial in {} ms", REBOOT_GRACE.as_millis());\n        std::thread::sleep(REBOOT_GRACE);/' \
        "$src/firmware/runtime/src/device.rs" ;;
    *) echo "runtime-variant: unknown kind $kind (base, constant, log-line)" >&2; exit 1 ;;
  esac
  if [ "$kind" != base ] && cmp -s firmware/runtime/src/device.rs "$src/firmware/runtime/src/device.rs"; then
    echo "runtime-variant: the $kind change did not apply to firmware/runtime/src/device.rs" >&2; exit 1
  fi
  echo "runtime-variant: building the runtime with the $kind change"
  start=$(date +%s)
  rm -f "$bin"
  (cd "$src" && CARGO_TARGET_DIR=$top/target \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    cargo build -q --release --target "$target" "${selection[@]}") \
    >/dev/null 2>"$work/build.log" || true
  [ -x "$bin" ] || { tail -20 "$work/build.log" >&2; echo "runtime-variant: the $kind build failed" >&2; exit 1; }
  echo "runtime-variant: built in $(( $(date +%s) - start )) s"
  cp -a "$work/tree" "$work/new"
  install -m 0755 "$bin" "$work/new/usr/bin/trellis-runtime"
  aarch64-linux-gnu-strip "$work/new/usr/bin/trellis-runtime"
  scripts/twin-squashfs.sh "$work/new" "$out/$kind.squashfs"
  rm -rf "$work/new"
done
