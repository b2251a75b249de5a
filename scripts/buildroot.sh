#!/usr/bin/env bash
# `make rpi4` / `make qemu-br`: the pinned Buildroot, the crates vendored for its
# offline cargo builds, and our external tree -> card image and update bundle.
#   buildroot.sh BUILD_DIR DEFCONFIG OUTPUT_DIR
# Buildroot is cloned at the pinned release tag and checked against the pinned
# commit (BUILDROOT=DIR uses a tree you already have, after the same check of its
# version). Needs the example apps built first (make apps) and, from the
# network, Buildroot's downloads (toolchain, kernel, packages).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:?usage: buildroot.sh BUILD_DIR DEFCONFIG OUTPUT_DIR}
defconfig=${2:?usage: buildroot.sh BUILD_DIR DEFCONFIG OUTPUT_DIR}
out=${3:?usage: buildroot.sh BUILD_DIR DEFCONFIG OUTPUT_DIR}
top=$PWD

# The pinned release: 2026.05.1 (its Rust 1.96.1 builds wasmtime 48).
br_version=2026.05.1
br_commit=cb857ba4c87a93e5265a9e4a3f32071abf39e14a
br_git=${BUILDROOT_GIT:-https://gitlab.com/buildroot.org/buildroot.git}

[ -f "buildroot-external/configs/$defconfig" ] || { echo "buildroot: no buildroot-external/configs/$defconfig" >&2; exit 1; }
ls "$build"/apps/*.wasm >/dev/null 2>&1 || { echo "buildroot: no apps in $build/apps (make apps)" >&2; exit 1; }

br=${BUILDROOT:-$build/buildroot-$br_version}
if [ ! -f "$br/Makefile" ]; then
  echo "buildroot: cloning Buildroot $br_version from $br_git"
  rm -rf "$br.tmp"
  git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$br_version" "$br_git" "$br.tmp"
  got=$(git -C "$br.tmp" rev-parse HEAD)
  if [ "$got" != "$br_commit" ]; then
    echo "buildroot: $br_git tag $br_version is commit $got, not the pinned $br_commit: refusing it" >&2
    exit 1
  fi
  mv "$br.tmp" "$br"
fi
version=$(sed -n 's/^export BR2_VERSION := //p' "$br/Makefile")
[ "$version" = "$br_version" ] || { echo "buildroot: $br is Buildroot $version, not $br_version" >&2; exit 1; }

# Crates for cargo --offline inside Buildroot (its cargo vendoring runs at
# download time, which local packages do not have).
vendor=$top/$build/vendor
if [ ! -f "$vendor/.stamp" ] || [ Cargo.lock -nt "$vendor/.stamp" ]; then
  echo "buildroot: vendoring the crates into $vendor"
  rm -rf "$vendor"
  cargo vendor --locked --versioned-dirs "$vendor" >/dev/null
  touch "$vendor/.stamp"
fi

scripts/br-patches.sh "$br"

# DELTA_FROM (the root filesystem image of the release the devices run): the bundle also
# carries the firmware delta from it (board/rpi4/post-image.sh), made on this machine.
if [ -n "${DELTA_FROM:-}" ]; then
  [ -f "$DELTA_FROM" ] || { echo "buildroot: DELTA_FROM=$DELTA_FROM is missing" >&2; exit 1; }
  # A copy: the build writes its own output/*/images/rootfs.squashfs, which it may name.
  copy=$(cd "$build" && pwd)/delta-base.squashfs
  cp "$DELTA_FROM" "$copy"
  DELTA_FROM=$copy
  cargo build --release --locked -p trellis-delta
  export DELTA_FROM TRELLIS_DELTA=$top/target/release/trellis-delta
fi

mkdir -p "$out"
make -C "$br" O="$top/$out" BR2_EXTERNAL="$top/buildroot-external" "$defconfig"
make -C "$br" O="$top/$out" TRELLIS_VENDOR_DIR="$vendor"
ls -l "$out/images/"*.img "$out/images/update.raucb"
