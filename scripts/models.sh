#!/usr/bin/env bash
# The classifier example's model: build/models/mobilenetv2.onnx, MobileNetV2
# with weights from a fixed seed (scripts/mobilenetv2.py), written once.
# The generator runs in a venv with pinned onnx and numpy, which
# `scripts/setup.sh --models` installs (idempotent) under
# ${TRELLIS_CACHE:-~/.cache/trellis}/tools/onnx-venv.
# Always build/models/ of this tree: the inference crate embeds it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/models/mobilenetv2.onnx
generator=scripts/mobilenetv2.py
# Written again only when the generator changed (its hash in $out.from).
from=$(sha256sum "$generator" | cut -d' ' -f1)
if [ -f "$out" ] && [ "$(cat "$out.from" 2>/dev/null)" = "$from" ]; then
  exit 0
fi
scripts/setup.sh --models
mkdir -p build/models
"${TRELLIS_CACHE:-$HOME/.cache/trellis}/tools/onnx-venv/bin/python" "$generator" "$out.tmp"
# The same bytes keep the old file (and its time stamp: cargo would rebuild what embeds it).
if cmp -s "$out.tmp" "$out"; then rm "$out.tmp"; else mv "$out.tmp" "$out"; fi
echo "$from" >"$out.from"
