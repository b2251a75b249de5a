#!/usr/bin/env bash
# Make the development PKI into DIR (never committed; design decision 8).
# Idempotent: existing keys are kept.
#   RAUC bundles: a CA (its certificate is the device's keyring) and a signing
#   certificate issued by it            ->  DIR/{ca,signing}.{key,cert}.pem
#   The management API (docs/api.md): an operator CA (baked into the image: the
#   device accepts clients it signed) with one operator certificate, and a
#   device CA (the CLI's trust) with the device's certificate for the name
#   trellis.local (also its client certificate), and the CA of the servers a
#   device streams bundles from          ->  DIR/api/{operator-ca,operator,device-ca,device,origin-ca}.{pem,key}
#   Fleet releases (docs/fleet.md): an ed25519 release-signing key in the
#   format of `trellis app keygen` (hex)  ->  DIR/release.{key,pub}
#   Apps (docs/app-format.md): an ed25519 app-signing key, the same format; the
#   image trusts it (/etc/trellis/trust), so apps precompiled on this
#   machine and signed with it load without compiling  ->  DIR/apps.{key,pub}
# Production keys are passed by path instead (RAUC_KEY, RAUC_CERT, RAUC_KEYRING;
# API_OPERATOR_CA, API_DEVICE_CERT, API_DEVICE_KEY; UPDATE_ORIGIN_CA; FLEET_RELEASE_KEY; APP_TRUST_KEY).
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

# The API's certificates: ECDSA P-256 (small and quick on the Pi).
api=$dir/api
mkdir -p "$api"
ca() { # NAME CN
  [ -f "$api/$1.pem" ] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/O=Trellis development/CN=$2" \
    -keyout "$api/$1.key" -out "$api/$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
leaf() { # NAME CN CA EXTENSIONS
  [ -f "$api/$1.pem" ] && return 0
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Trellis development/CN=$2" \
    -keyout "$api/$1.key" -out "$api/$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$4" >"$api/$1.ext"
  openssl x509 -req -in "$api/$1.csr" -CA "$api/$3.pem" -CAkey "$api/$3.key" -CAcreateserial \
    -days 3650 -extfile "$api/$1.ext" -out "$api/$1.pem" 2>/dev/null
  rm -f "$api/$1.csr" "$api/$1.ext"
}
ca operator-ca "Trellis development operator CA"
ca device-ca "Trellis development device CA"
ca origin-ca "Trellis development update origin CA"
leaf operator "Trellis development operator" operator-ca "extendedKeyUsage=clientAuth"
# The device's certificate is its one identity: the API's server certificate, and the
# client certificate it presents to the fleet's servers and to an update origin. A
# certificate made before it was a client certificate is made again.
if [ -f "$api/device.pem" ] && ! openssl x509 -in "$api/device.pem" -noout -ext extendedKeyUsage 2>/dev/null \
  | grep -q 'Client Authentication'; then
  rm -f "$api/device.pem" "$api/device.key"
fi
leaf device "trellis.local" device-ca "extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:trellis.local"
# ed25519 signing keys in the format of `trellis app keygen`: raw 32-byte secret
# and public key, hex. NAME.key, NAME.pub
ed25519_pair() {
  [ -f "$dir/$1.key" ] && [ -f "$dir/$1.pub" ] && return 0
  local pem=$dir/$1.pem
  openssl genpkey -algorithm ed25519 -out "$pem" 2>/dev/null
  { openssl pkey -in "$pem" -outform DER | tail -c 32 | od -An -v -tx1 | tr -d ' \n'; echo; } >"$dir/$1.key.tmp"
  { openssl pkey -in "$pem" -pubout -outform DER | tail -c 32 | od -An -v -tx1 | tr -d ' \n'; echo; } >"$dir/$1.pub.tmp"
  chmod 0644 "$dir/$1.pub.tmp"
  # The public half last: a pair is whole once both names exist.
  mv "$dir/$1.key.tmp" "$dir/$1.key"
  mv "$dir/$1.pub.tmp" "$dir/$1.pub"
  rm -f "$pem"
}
ed25519_pair release
ed25519_pair apps
echo "dev-keys: $dir (keyring: ca.cert.pem; signing: signing.{key,cert}.pem; API: api/; releases: release.{key,pub}; apps: apps.{key,pub})"
