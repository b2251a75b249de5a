#!/usr/bin/env bash
# Install what Trellis's build and tests need on a Debian machine. Idempotent:
# installs only what is missing. Fails with a message naming what could not
# be installed.
#   setup.sh          what `make demo` and `make apps` need
#   setup.sh --cross  also the linters, the aarch64 cross toolchain, qemu-user, and what the
#                     device twin's image and harness need (`make test`, `make qemu`)
#   setup.sh --buildroot  what `make rpi4` / `make qemu-br` need: Buildroot's host packages
set -euo pipefail
cd "$(dirname "$0")/.."

# The fleet's engine: the fleet tests start their own nats-server (JetStream) on loopback.
APT_PACKAGES=(nats-server)
TOOLCHAIN=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
TARGETS=(wasm32-wasip2)
if [ "${1:-}" = "--cross" ]; then
  APT_PACKAGES+=(shellcheck gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
  # The twin: its kernel (Debian's source, built with the cross compiler), the image tools, QEMU.
  APT_PACKAGES+=(linux-source-6.1 make flex bison bc kmod libssl-dev libelf-dev xz-utils
    genimage squashfs-tools dosfstools mtools f2fs-tools qemu-system-arm
    rauc openssl)
  TARGETS+=(aarch64-unknown-linux-gnu)
  # Debian's arm64 packages (RAUC, dbus, f2fs-tools, busybox) go into the twin's root filesystem.
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "setup: adding the arm64 architecture to dpkg (for the twin's root filesystem)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    { $sudo dpkg --add-architecture arm64 && $sudo apt-get update -qq; } \
      || { echo "setup: could not add the arm64 architecture (dpkg --add-architecture arm64)" >&2; exit 1; }
  fi
fi

if [ "${1:-}" = "--buildroot" ]; then
  # Buildroot's mandatory host packages (its manual, "System requirements"), git for
  # the pinned clone, and what utils/check-package uses (make br-check).
  APT_PACKAGES+=(build-essential make binutils diffutils gcc g++ bash patch gzip bzip2 perl
    tar cpio unzip rsync file bc findutils wget git python3 python3-magic flake8 libncurses-dev)
fi

missing=()
for pkg in "${APT_PACKAGES[@]+"${APT_PACKAGES[@]}"}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "setup: could not install ${missing[*]} with apt-get" >&2
    exit 1
  fi
  # Debian's package starts a system-wide nats-server; Trellis starts its own, on loopback.
  if [[ " ${missing[*]} " == *" nats-server "* ]] && command -v systemctl >/dev/null \
    && systemctl is-enabled nats-server >/dev/null 2>&1; then
    $sudo systemctl disable --now nats-server >/dev/null 2>&1 || true
  fi
fi

if ! command -v rustup >/dev/null; then
  echo "setup: rustup is needed (https://rustup.rs); Trellis pins Rust $TOOLCHAIN in rust-toolchain.toml" >&2
  exit 1
fi
installed=$(rustup target list --installed --toolchain "$TOOLCHAIN" 2>/dev/null || true)
for target in "${TARGETS[@]}"; do
  if ! grep -qx "$target" <<<"$installed"; then
    echo "setup: adding Rust target $target to $TOOLCHAIN"
    if ! rustup target add --toolchain "$TOOLCHAIN" "$target"; then
      echo "setup: could not add the Rust target $target (rustup target add --toolchain $TOOLCHAIN $target)" >&2
      exit 1
    fi
  fi
done
for component in rustfmt clippy; do
  rustup component list --installed --toolchain "$TOOLCHAIN" 2>/dev/null | grep -q "^$component" \
    || rustup component add --toolchain "$TOOLCHAIN" "$component"
done
