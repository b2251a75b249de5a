#!/usr/bin/env bash
# Make the development PKI for RAUC bundles into DIR (never committed; design
# decision 8): a CA (its certificate is the device's keyring) and a signing
# certificate issued by it. Idempotent: existing keys are kept.
#   dev-keys.sh DIR   ->  DIR/{ca,signing}.{key,cert}.pem
# Production keys are passed by path instead (RAUC_KEY, RAUC_CERT, RAUC_KEYRING).
set -euo pipefail
dir=${1:?usage: dev-keys.sh DIR}
command -v openssl >/dev/null || { echo "dev-keys: openssl is missing (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.cert.pem" ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/O=Trellis development/CN=Trellis development CA" \
    -keyout "$dir/ca.key.pem" -out "$dir/ca.cert.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
if [ ! -f "$dir/signing.cert.pem" ]; then
  openssl req -newkey rsa:3072 -nodes -subj "/O=Trellis development/CN=Trellis development bundle signing" \
    -keyout "$dir/signing.key.pem" -out "$dir/signing.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' >"$dir/signing.ext"
  openssl x509 -req -in "$dir/signing.csr" -CA "$dir/ca.cert.pem" -CAkey "$dir/ca.key.pem" -CAcreateserial \
    -days 3650 -extfile "$dir/signing.ext" -out "$dir/signing.cert.pem" 2>/dev/null
  rm -f "$dir/signing.csr" "$dir/signing.ext"
fi
echo "dev-keys: $dir (keyring: ca.cert.pem; signing: signing.{key,cert}.pem)"
