#!/usr/bin/env bash
# Build the Python apps: wasm-apps/python/NAME/app.py (with the SDK in
# wasm-apps/python/sdk) → a component by componentize-py (installed by
# scripts/setup.sh) → BUILD/lang-apps/py-NAME.wasm, packed with its
# trellis.toml by `trellis app pack`. Part of `make apps`.
#   python-apps.sh BUILD [TRELLIS]   (TRELLIS: the CLI, default target/debug/trellis)
# componentize-py takes about a minute per app, so each component is kept in
# BUILD/python/ under the hash of its inputs (the app's directory, the SDK, the
# WIT, the tool's version) and made again only when one of them changes; packing is
# done every time (a second). The components are not in BUILD/lang-apps/, which a
# runtime can be pointed at as an apps directory.
# The same apps for the Pi go to BUILD/pi-apps/py-NAME.wasm: their code compiled
# ahead of time for aarch64 with the runtime's engine settings (`trellis app
# precompile`, about 10 s each; kept in BUILD/python/ under the component's key and
# the CLI's) and signed with the development app key BUILD/keys/apps.key, which
# the images trust (scripts/dev-keys.sh): a device loads them without compiling.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${1:?usage: python-apps.sh BUILD [TRELLIS]}
TRELLIS=${2:-target/debug/trellis}
# The pin, where scripts/setup.sh installs it from.
COMPONENTIZE_PY_VERSION=$(sed -n 's/^COMPONENTIZE_PY_VERSION=//p' scripts/setup.sh)
TOOLS=${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools/componentize-py-$COMPONENTIZE_PY_VERSION
# The world in wit/ (its package version is whatever wit/trellis.wit declares).
WORLD=stateful-app
APPS=(blinky counter)

componentize=$TOOLS/bin/componentize-py
if [ ! -f "$TOOLS/.complete" ] || ! "$componentize" --version >/dev/null 2>&1; then
  echo "python-apps: componentize-py $COMPONENTIZE_PY_VERSION is not installed in $TOOLS: run \`make setup\` (scripts/setup.sh)" >&2
  exit 1
fi
[ -x "$TRELLIS" ] || { echo "python-apps: no CLI at $TRELLIS: run \`make cli\`" >&2; exit 1; }

# componentize-py bundles the site-packages of VIRTUAL_ENV, or else those of the
# `python` on PATH: point it at an empty one so that nothing installed on the
# build machine ends up in the component.
empty_site=$(realpath -m "$BUILD/python/empty-venv")
mkdir -p "$empty_site/lib/python3/site-packages" "$BUILD/lang-apps" "$BUILD/pi-apps"
scripts/dev-keys.sh "$BUILD/keys" >/dev/null
# What the compiled code depends on besides the component: the CLI that compiles it
# (its wasmtime, the runtime's engine settings and the section's format are in it).
engine_key=$(sha256sum "$TRELLIS" | cut -c1-16)

for app in "${APPS[@]}"; do
  src=wasm-apps/python/$app
  # Every input of the component, by content (file names included).
  key=$({
    echo "componentize-py $COMPONENTIZE_PY_VERSION $WORLD"
    find "$src" wasm-apps/python/sdk wit -type f \( -name '*.py' -o -name '*.wit' \) -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16)
  component=$BUILD/python/py-$app-$key.wasm
  if [ ! -f "$component" ]; then
    echo "python-apps: componentize-py $app (about a minute)"
    rm -f "$BUILD/python/py-$app-"*.wasm
    # From a copy: componentize-py writes __pycache__ beside the sources it reads.
    stage=$BUILD/python/stage/$app
    rm -rf "$stage"
    mkdir -p "$stage/app" "$stage/sdk"
    cp "$src"/*.py "$stage/app/"
    cp wasm-apps/python/sdk/*.py "$stage/sdk/"
    if ! VIRTUAL_ENV=$empty_site "$componentize" --quiet -d wit -w "$WORLD" componentize app \
      -p "$stage/app" -p "$stage/sdk" -o "$component.tmp"; then
      rm -f "$component.tmp"
      echo "python-apps: componentize-py could not build $src" >&2
      exit 1
    fi
    mv "$component.tmp" "$component"
  fi
  "$TRELLIS" app pack "$component" -m "$src/trellis.toml" -o "$BUILD/lang-apps/py-$app.wasm"
  native=$BUILD/python/py-$app-$key-$engine_key.aarch64.wasm
  if [ ! -f "$native" ]; then
    rm -f "$BUILD/python/py-$app-"*.aarch64.wasm
    "$TRELLIS" app precompile "$BUILD/lang-apps/py-$app.wasm" --target aarch64-unknown-linux-gnu -o "$native.tmp"
    mv "$native.tmp" "$native"
  fi
  "$TRELLIS" app pack "$native" -m "$src/trellis.toml" -o "$BUILD/pi-apps/py-$app.wasm"
  "$TRELLIS" app sign "$BUILD/pi-apps/py-$app.wasm" --key "$BUILD/keys/apps.key"
done
