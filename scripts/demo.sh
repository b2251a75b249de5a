#!/usr/bin/env bash
# make demo: run the example apps on simulated hardware with the same runtime
# library the device uses, then swap one live and show that a broken file is
# refused while the running version carries on.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
trellis=target/debug/trellis
demo="$build/demo"
rm -rf "$demo"
mkdir -p "$demo/apps"
cp "$build"/apps/*.wasm "$demo/apps/"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "starting the runtime on $demo/apps (simulated board: GPIO, TMP102 on I2C-1, SPI loopback)"
"$trellis" run "$demo/apps" --room --seconds 24 &
runtime=$!
trap 'kill "$runtime" 2>/dev/null || true' EXIT
sleep 6

say "swapping counter 1.0.0 for 1.1.0 (ticks every 250 ms): packed to a temporary name, renamed into place"
"$trellis" app pack wasm-apps/target/wasm32-wasip2/release/counter.wasm \
  -m wasm-apps/examples/counter/trellis.toml --version 1.1.0 --set period-ms=250 \
  -o "$demo/apps/.counter.wasm.tmp" >/dev/null
mv "$demo/apps/.counter.wasm.tmp" "$demo/apps/counter.wasm"
sleep 5

say "copying a truncated blinky.wasm over the running one: refused, blinky keeps blinking"
head -c 20000 "$build/apps/blinky.wasm" > "$demo/apps/blinky.wasm"
sleep 4

say "inspecting an app file"
"$trellis" app inspect "$demo/apps/counter.wasm" >&2
wait "$runtime"
trap - EXIT
say "done: the count continued across the swap, and the broken file changed nothing"
