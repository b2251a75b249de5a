#!/usr/bin/env bash
# Install what Trellis's build and tests need on a Debian machine. Idempotent:
# installs only what is missing. Fails with a message naming what could not
# be installed.
#   setup.sh          what `make demo` and `make apps` need
#   setup.sh --cross  also the linters, the aarch64 cross toolchain, qemu-user, and what the
#                     device twin's image and harness need (`make test`, `make qemu`)
#   setup.sh --buildroot  what `make rpi4` / `make qemu-br` need: Buildroot's host packages
#   setup.sh --models     only the classifier example's model generator (scripts/models.sh)
#   setup.sh --bench      also what `make bench-delta` compares RAUC's adaptive mode with
#                         (casync, xdelta3, bsdiff, erofs-utils)
set -euo pipefail
cd "$(dirname "$0")/.."

# The fleet's engine: the fleet tests start their own nats-server (JetStream) on loopback.
APT_PACKAGES=(nats-server)
# --cross (make check, make test): the apps in other languages (make lang-apps).
# Python apps (wasm-apps/python): componentize-py goes into a venv of Debian's python3, below.
# C apps (wasm-apps/c): clang for wasm32 and wasi-libc; the rest by scripts/c-toolchain.sh, below.
# shellcheck source=scripts/c-toolchain.sh
. scripts/c-toolchain.sh
if [ "${1:-}" = "--cross" ]; then
  APT_PACKAGES+=(python3-venv "${C_APT_PACKAGES[@]}")
fi
TOOLCHAIN=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
TARGETS=(wasm32-wasip2)
if [ "${1:-}" = "--cross" ]; then
  APT_PACKAGES+=(shellcheck gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
  # The twin: its kernel (Debian's source, built with the cross compiler), the image tools, QEMU.
  APT_PACKAGES+=(linux-source-6.1 make flex bison bc kmod libssl-dev libelf-dev xz-utils
    genimage squashfs-tools dosfstools mtools f2fs-tools qemu-system-arm
    rauc openssl curl)
  # The twin's RAUC, cross-built with meson (scripts/rauc-build.sh).
  APT_PACKAGES+=(meson ninja-build pkgconf libglib2.0-dev-bin)
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

if [ "${1:-}" = "--bench" ]; then
  APT_PACKAGES+=(casync xdelta3 bsdiff erofs-utils)
fi

if [ "${1:-}" = "--buildroot" ]; then
  # Buildroot's mandatory host packages (its manual, "System requirements"), git for
  # the pinned clone, and what utils/check-package uses (make br-check).
  APT_PACKAGES+=(build-essential make binutils diffutils gcc g++ bash patch gzip bzip2 perl
    tar cpio unzip rsync file bc findutils wget git python3 python3-magic flake8 libncurses-dev)
fi

# --models: the classifier example's model generator (scripts/mobilenetv2.py, run by
# scripts/models.sh): pinned onnx and numpy from PyPI in a venv under the cache. Only this.
if [ "${1:-}" = "--models" ]; then
  venv=${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools/onnx-venv
  pins="onnx==1.23.2 numpy==2.4.6"
  [ "$(cat "$venv/.pins" 2>/dev/null)" = "$pins" ] && exit 0
  echo "setup: installing $pins into $venv"
  rm -rf "$venv"
  # shellcheck disable=SC2086 # $pins is a list of requirements
  if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q $pins; }; then
    echo "setup: could not install $pins into $venv (python3 -m venv needs Debian's python3-venv)" >&2
    exit 1
  fi
  echo "$pins" >"$venv/.pins"
  exit 0
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

[ "${1:-}" = "--cross" ] || exit 0

# Python apps (wasm-apps/python, scripts/python-apps.sh): componentize-py, pinned, from PyPI
# into a venv of its own under the cache. A venv is complete only once its marker is written:
# one left half-made by an interrupted install is made again.
COMPONENTIZE_PY_VERSION=0.25.1
py_tools=${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools/componentize-py-$COMPONENTIZE_PY_VERSION
if [ ! -f "$py_tools/.complete" ] \
  || [ "$("$py_tools/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION into $py_tools"
  rm -rf "$py_tools"
  mkdir -p "$(dirname "$py_tools")"
  if ! /usr/bin/python3 -m venv "$py_tools"; then
    echo "setup: could not make a Python venv in $py_tools (/usr/bin/python3 -m venv; Debian's python3-venv)" >&2
    exit 1
  fi
  if ! "$py_tools/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"; then
    echo "setup: could not install componentize-py==$COMPONENTIZE_PY_VERSION from PyPI (pip install into $py_tools)" >&2
    exit 1
  fi
  if [ "$("$py_tools/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    echo "setup: componentize-py $COMPONENTIZE_PY_VERSION in $py_tools does not run" >&2
    exit 1
  fi
  touch "$py_tools/.complete"
fi

# C apps: wit-bindgen, wasm-tools and the WASI adapter, pinned, under the cache.
scripts/c-toolchain.sh
