#!/usr/bin/env bash
# Build a Trellis app written in C into a WebAssembly component (unpacked: `trellis app pack`
# adds the manifest). wasm-apps/README.md, "Apps in C".
#   build-c-app.sh APP_DIR OUT.wasm
# Every *.c in APP_DIR is compiled; the world is the one whose bindings header the sources
# include: "app.h" (world app), "stateful_app.h" (stateful-app) or "consenting_app.h"
# (consenting-app). The toolchain comes from `make setup` (scripts/c-toolchain.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/c-toolchain.sh
. "$repo/scripts/c-toolchain.sh"

fail() {
  echo "build-c-app: $*" >&2
  exit 1
}

[ $# -eq 2 ] || fail "usage: build-c-app.sh APP_DIR OUT.wasm"
app=$1
out=$2
[ -d "$app" ] || fail "$app is not a directory"
shopt -s nullglob
sources=("$app"/*.c)
[ ${#sources[@]} -gt 0 ] || fail "no .c file in $app"

for tool in "$WIT_BINDGEN" "$WASM_TOOLS"; do
  [ -x "$tool" ] || fail "$tool is missing: run \`make setup\` (or scripts/c-toolchain.sh)"
done
[ -f "$ADAPTER" ] || fail "$ADAPTER is missing: run \`make setup\` (or scripts/c-toolchain.sh)"
command -v "$C_CLANG" >/dev/null || fail "$C_CLANG is missing: run \`make setup\` (Debian's ${C_APT_PACKAGES[*]})"

# The world, from the bindings header the sources include.
headers=$(grep -ho '^#include "\(app\|stateful_app\|consenting_app\)\.h"' "${sources[@]}" | sort -u || true)
case $(wc -l <<<"$headers")/$headers in
  1/'#include "app.h"') world=app ;;
  1/'#include "stateful_app.h"') world=stateful-app ;;
  1/'#include "consenting_app.h"') world=consenting-app ;;
  *) fail "the sources in $app must include exactly one bindings header (\"app.h\", \"stateful_app.h\" or \"consenting_app.h\"), which picks the world; found: ${headers:-none}" ;;
esac
stem=${world//-/_}

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
# 1. The bindings: $stem.h (types, imports, the exports to write), $stem.c (the canonical ABI
#    glue, cabi_realloc) and ${stem}_component_type.o (the world's type, for `component new`).
if ! "$WIT_BINDGEN" c --world "trellis:app/$world" --out-dir "$gen" "$repo/wit" >"$gen/wit-bindgen.log" 2>&1; then
  cat "$gen/wit-bindgen.log" >&2
  fail "wit-bindgen c could not generate the bindings of world $world from $repo/wit"
fi
# 2. A core module: a WASI preview 1 reactor (no main; _initialize runs the constructors) with
#    wasi-libc (malloc, string.h, stdio if used).
"$C_CLANG" --target=wasm32-wasi -mexec-model=reactor -Os -std=gnu17 -Wall -Wextra -Werror \
  -I "$gen" -I "$repo/wasm-apps/c/include" "${sources[@]}" "$gen/$stem.c" "$gen/${stem}_component_type.o" \
  -Wl,--strip-all -o "$gen/core.wasm" \
  || fail "$C_CLANG could not compile and link $app"
# 3. The component: the core module's imports and exports lifted to the world's, and any WASI
#    preview 1 call (printf, clock_gettime...) adapted to WASI 0.2 by the reactor adapter.
mkdir -p "$(dirname "$out")"
"$WASM_TOOLS" component new "$gen/core.wasm" --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$gen/component.wasm" \
  || fail "wasm-tools component new could not make a component of $app"
"$WASM_TOOLS" validate "$gen/component.wasm" || fail "the component built from $app does not validate"
cp "$gen/component.wasm" "$out.tmp"
mv "$out.tmp" "$out"
echo "build-c-app: $out ($world, $(stat -c %s "$out") bytes)"
