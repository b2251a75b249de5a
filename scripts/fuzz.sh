#!/usr/bin/env bash
# Run the fuzz targets (fuzz/) with libFuzzer for SECONDS each (default 60).
# cargo-fuzz needs a nightly compiler: both are installed here if missing.
# New inputs go to build/fuzz/corpus/TARGET; crashes to fuzz/artifacts/TARGET
# (then: cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...).
#   fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal \
    || { echo "fuzz: cannot install a nightly Rust toolchain (rustup toolchain install nightly)" >&2; exit 1; }
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked \
    || { echo "fuzz: cannot install cargo-fuzz (cargo install cargo-fuzz)" >&2; exit 1; }
fi
for target in request_head manifest app_file; do
  mkdir -p "build/fuzz/corpus/$target"
  echo "fuzz: $target for $seconds s"
  cargo +nightly fuzz run "$target" "build/fuzz/corpus/$target" "fuzz/corpus/$target" -- -max_total_time="$seconds"
done
