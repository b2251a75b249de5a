#!/usr/bin/env bash
# What a transport library for the LAN's pieces would add to the device
# (`make bench-transport`, part of `make bench`). The three programs of
# ota/transport-size are built for the Pi as the device's binaries are
# (aarch64, release, stripped):
#   base      what the device links already: tokio, rustls (ring), a file over TLS on TCP
#   bao       base + bao-tree: a range encoded with its proof, decoded against the root hash
#   iroh      base + iroh and iroh-blobs: an endpoint with no relay and no DNS lookup
#             (presets::Minimal), a persistent store, a blob served and fetched
# Each binary is also packed alone into a squashfs compressed as the twin's root
# filesystem is (zstd), for what it adds to the image. Then each is run under
# qemu-user on loopback doing its job, so no figure is of a program that does not
# work. Prints a Markdown table (and writes it to BUILD_DIR/transport-size/table.md).
#   scripts/transport-size.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build}/transport-size
target=aarch64-unknown-linux-gnu
rm -rf "$out"
mkdir -p "$out"

(cd ota/transport-size && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc cargo build --locked --release --target "$target")
bin=ota/transport-size/target/$target/release
run() { timeout 120 qemu-aarch64-static -L /usr/aarch64-linux-gnu "$@"; }
fail() { echo "transport-size: $*" >&2; exit 1; }

# A release's piece: 3 MiB of bytes that do not compress.
head -c $((3 << 20)) /dev/urandom > "$out/piece.bin"

# base: over TLS on TCP, with a CA and a peer's certificate (DER, as rustls reads them).
pki=$out/pki
mkdir -p "$pki"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=trellis-ca \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=peer \
  -keyout "$pki/peer.key" -out "$pki/peer.csr" 2>/dev/null
printf 'subjectAltName=DNS:peer\n' > "$pki/ext"
openssl x509 -req -in "$pki/peer.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 1 \
  -extfile "$pki/ext" -out "$pki/peer.pem" 2>/dev/null
openssl x509 -in "$pki/ca.pem" -outform der -out "$pki/ca.der"
openssl x509 -in "$pki/peer.pem" -outform der -out "$pki/peer.der"
openssl pkcs8 -topk8 -nocrypt -in "$pki/peer.key" -outform der -out "$pki/peer.key.der"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run "$bin/base" tls-serve "$pki/peer.der" "$pki/peer.key.der" "127.0.0.1:$port" "$out/piece.bin" &
server=$!
for _ in $(seq 50); do
  run "$bin/base" tls-fetch "$pki/ca.der" "127.0.0.1:$port" peer "$out/base.out" 2>/dev/null && break
  sleep 0.2
done
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
cmp -s "$out/piece.bin" "$out/base.out" || fail "base: the file fetched over TLS is not the one served"

# bao: a range in the middle, encoded with its proof and verified against the root.
bao=$(run "$bin/bao" roundtrip "$out/piece.bin" 1000000 2000000) || fail "bao: the range did not verify"
echo "bao: $bao"

# iroh: one endpoint serves the piece from its store, another fetches it by hash from its address.
run "$bin/iroh-size" serve "$out/iroh-a" "$out/piece.bin" > "$out/iroh-serve.out" 2> "$out/iroh-serve.err" &
server=$!
for _ in $(seq 100); do
  [ -s "$out/iroh-serve.out" ] && break
  sleep 0.2
done
read -r id hash iport < "$out/iroh-serve.out" || fail "iroh: the serving endpoint did not start: $(tail -3 "$out/iroh-serve.err")"
got=$(run "$bin/iroh-size" fetch "$out/iroh-b" "$id" "$hash" "127.0.0.1:$iport" "$out/iroh.out") \
  || fail "iroh: the fetch failed"
kill -INT "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
cmp -s "$out/piece.bin" "$out/iroh.out" || fail "iroh: the blob fetched is not the one served"
echo "iroh: $got"

squashed() {
  rm -rf "$out/sq" "$out/sq.img"
  mkdir -p "$out/sq"
  cp "$1" "$out/sq/"
  mksquashfs "$out/sq" "$out/sq.img" -comp zstd -all-root -noappend -quiet -no-progress >/dev/null
  stat -c %s "$out/sq.img"
}
base_bin=$(stat -c %s "$bin/base")
base_sq=$(squashed "$bin/base")
{
  echo "| program | binary (stripped) | added to base | squashfs (zstd) | added to base |"
  echo "|---|---|---|---|---|"
  for p in base bao iroh-size; do
    b=$(stat -c %s "$bin/$p")
    q=$(squashed "$bin/$p")
    printf '| %s | %s KiB | %s KiB | %s KiB | %s KiB |\n' "$p" $((b / 1024)) $(((b - base_bin) / 1024)) \
      $((q / 1024)) $(((q - base_sq) / 1024))
  done
  runtime=target/$target/release/trellis-runtime
  if [ -f "$runtime" ]; then
    printf '\nThe device'"'"'s runtime (%s): %s KiB.\n' "$runtime" $(($(stat -c %s "$runtime") / 1024))
  fi
} | tee "$out/table.md"
