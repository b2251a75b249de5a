#!/usr/bin/env bash
# The isomorphic path: the example apps, byte for byte the files in build/apps,
# run on the aarch64 runtime binary (under qemu-aarch64-static). Passes when
# every app reports running and the publisher's messages reach the subscriber.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
runtime=target/aarch64-unknown-linux-gnu/release/trellis-runtime
[ -x "$runtime" ] || { echo "aarch64-smoke: $runtime is missing; run make cross-release" >&2; exit 1; }
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/apps"
cp "$build"/apps/*.wasm "$dir/apps/"
apps=$(find "$dir/apps" -name '*.wasm' | wc -l)
qemu-aarch64-static -L /usr/aarch64-linux-gnu "$runtime" --board sim \
  --apps-dir "$dir/apps" --state-dir "$dir/state" --config /nonexistent >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 60); do
  running=$(grep -c 'app running' "$dir/log" || true)
  if [ "$running" -ge "$apps" ] && grep -q 'demo/ticks: [0-9]* (message' "$dir/log"; then
    echo "aarch64-smoke: $running of $apps apps running on aarch64, messages flowing"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 1
done
echo "aarch64-smoke: the apps did not all come up on the aarch64 runtime; its log:" >&2
cat "$dir/log" >&2
exit 1
