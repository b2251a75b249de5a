#!/usr/bin/env bash
# The on-demand assets benchmark (docs/benchmarks.md, "Assets on demand"): an
# origin (`trellis asset serve`) in a network namespace of its own behind a
# veth link whose rate tc limits (tbf, both ways), and the benchmark's client
# (firmware/assets/examples/ondemand.rs) on the host side, which adds the
# link's latency in a relay of its own (this host's kernel has no netem). Two links, wired
# and Wi-Fi-like, RUNS runs each; a 14 MiB asset (MobileNetV2's weights as
# float32). Needs root (ip netns, tc). Everything it makes is removed on exit.
#   scripts/bench-assets.sh TRELLIS_CLI ONDEMAND_BIN [RUNS]
set -euo pipefail
cli=$(realpath "$1")
client=$(realpath "$2")
runs=${3:-3}
ns=trellis-bench-origin
host_if=tb-host
work=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$host_if" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/assets"
# Deterministic, incompressible bytes.
head -c $((14 * 1024 * 1024)) < <(openssl enc -aes-128-ctr -nosalt -pass pass:trellis-assets -pbkdf2 < /dev/zero 2>/dev/null) > "$work/assets/weights.bin"
id=$("$cli" asset index --json "$work/assets/weights.bin" | sed -n 's/.*"id":"\([0-9a-f]*\)".*/\1/p')

ip netns add "$ns"
ip link add "$host_if" type veth peer name tb-origin
ip link set tb-origin netns "$ns"
ip addr add 10.77.0.2/24 dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add 10.77.0.1/24 dev tb-origin
ip -n "$ns" link set tb-origin up
ip -n "$ns" link set lo up

# The bucket holds what the link carries in 4 ms (at least what one timer tick
# of a HZ=250 kernel needs): a link does not bank the capacity it left idle
# during a round trip.
shape() { # rate burst
  tc qdisc replace dev "$host_if" root tbf rate "$1" burst "$2" latency 400ms
  ip netns exec "$ns" tc qdisc replace dev tb-origin root tbf rate "$1" burst "$2" latency 400ms
}

echo "asset: 14 MiB, $(( 14 * 16 )) blocks of 64 KiB, read in 256 KiB reads; push window 16 blocks"
# Wired: 100 Mbit/s, 0.5 ms each way. Wi-Fi-like: 20 Mbit/s, 5 ms each way.
for link in "wired 500 100mbit 50kb" "wifi 5000 20mbit 10kb"; do
  read -r name delay_us rate burst <<<"$link"
  shape "$rate" "$burst"
  echo "link $name: $((delay_us / 1000)).$((delay_us % 1000 / 100)) ms each way, $rate"
  for run in $(seq 1 "$runs"); do
    : >"$work/serve.log"
    ip netns exec "$ns" "$cli" asset serve "$work/assets" --listen 10.77.0.1:8470 >"$work/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 1 50); do
      grep -q "serving on" "$work/serve.log" && break
      sleep 0.1
    done
    "$client" 10.77.0.1:8470 "$id" "$name/$run" "$delay_us"
    kill "$server"
    wait "$server" 2>/dev/null || true
    server=""
  done
done
