#!/usr/bin/env bash
# The README's "Try your own app", typed as a user would, on a copy of
# build/apps: `trellis run` on the apps, then a new blinky (1.1.0, faster)
# packed to a temporary name and renamed into place; passes when the runtime
# reports 1.1.0 replacing 1.0.0. Needs `make apps`. Bounded: 60 s.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
trellis=target/debug/trellis
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cp -r "$build/apps" "$dir/apps"
"$trellis" run "$dir/apps" --seconds 60 >"$dir/log" 2>&1 &
pid=$!
wait_for() { # PATTERN WHAT
  for _ in $(seq 300); do
    grep -q -- "$1" "$dir/log" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "own-app: $2 did not happen; the runtime's log:" >&2
  cat "$dir/log" >&2
  exit 1
}
wait_for 'app running app="blinky" version=1.0.0' "blinky 1.0.0 running"
"$trellis" app pack wasm-apps/target/wasm32-wasip2/release/blinky.wasm \
  -m wasm-apps/examples/blinky/trellis.toml --version 1.1.0 --set period-ms=100 \
  -o "$dir/apps/.blinky.wasm.tmp" && mv "$dir/apps/.blinky.wasm.tmp" "$dir/apps/blinky.wasm"
wait_for 'app running app="blinky" version=1.1.0 replaced="1.0.0"' "the swap to blinky 1.1.0"
echo "own-app: blinky 1.1.0 replaced 1.0.0 in a running trellis run"
