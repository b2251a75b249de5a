#!/usr/bin/env bash
# make bench-inference: MobileNetV2 per-inference time, Wasm (the classifier app
# through the runtime, `trellis run`) vs native (classifier-bench), same engine,
# one thread, same input; medians over RUNS runs (default 20) after one warm-up
# (native) or a first round (Wasm: the app's first round includes first-touch
# costs, so the second round is the one reported). Prints a Markdown table; the
# runtime's logs are left in BUILD/bench-inference/.
#   bench-inference.sh [BUILD]      (RUNS=N, ENGINES="rten tract")
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
runs=${RUNS:-20}
engines=${ENGINES:-rten tract}
trellis=target/debug/trellis
bench="wasm-apps/target/inference/classifier-bench"
code="wasm-apps/target/wasm32-wasip2/inference/classifier.wasm"
for f in "$trellis" "$bench" "$code"; do
  [ -x "$f" ] || [ -f "$f" ] || { echo "bench-inference: $f missing: make classifier" >&2; exit 1; }
done
work="$build/bench-inference"
rm -rf "$work" && mkdir -p "$work/state"
runtime=""
trap '[ -n "$runtime" ] && kill "$runtime" 2>/dev/null' EXIT

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }

rows=()
for engine in $engines; do
  # Wasm: two rounds of $runs inferences, 1 s apart; the second round's median.
  rm -rf "$work/apps" && mkdir -p "$work/apps"
  "$trellis" app pack "$code" -m wasm-apps/examples/classifier/trellis.toml \
    --set engine="$engine" --set runs="$runs" --set period-ms=1000 \
    -o "$work/apps/classifier.wasm" >/dev/null
  # One state directory: the second engine reuses the first one's compiled component from the cache.
  "$trellis" run "$work/apps/classifier.wasm" --state-dir "$work/state" >"$work/$engine.log" 2>&1 &
  runtime=$!
  for _ in $(seq 1200); do
    [ "$(grep -c "wasm engine=$engine" "$work/$engine.log" || true)" -ge 4 ] && break
    kill -0 "$runtime" 2>/dev/null || break
    sleep 0.5
  done
  kill "$runtime" 2>/dev/null || true
  wait "$runtime" 2>/dev/null || true
  runtime=""
  # The app logs each round and publishes it (both lines carry it): the last one is the second round.
  wasm=$(grep -o "wasm engine=$engine [^\"]*" "$work/$engine.log" | tail -1 || true)
  if [ -z "$wasm" ]; then
    echo "bench-inference: the app reported nothing; its log:" >&2
    tail -20 "$work/$engine.log" >&2
    exit 1
  fi
  echo "$wasm"
  native=$("$bench" --engine "$engine" --runs "$runs")
  echo "$native"
  wm=$(field median_ms "$wasm")
  nm=$(field median_ms "$native")
  ratio=$(awk -v w="$wm" -v n="$nm" 'BEGIN { printf "%.2f", w / n }')
  same=$([ "$(field top5 "$wasm" | cut -d: -f1)" = "$(field top5 "$native" | cut -d: -f1)" ] && echo yes || echo NO)
  rows+=("| $engine | $wm ms | $nm ms | ${ratio}× | $runs | $same |")
done

echo
echo "MobileNetV2 (224x224x3, 1000 classes), one thread, medians of $runs inferences ($(uname -m), $(nproc) CPUs)"
echo
echo "| engine | Wasm (classifier app, SIMD128 + relaxed-simd, in the runtime) | native (classifier-bench) | Wasm ÷ native | runs | same top-1 |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
