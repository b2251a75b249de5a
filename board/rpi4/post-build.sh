#!/usr/bin/env bash
# Buildroot post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT):
#   post-build.sh TARGET_DIR BOARD        BOARD: rpi4 or qemu-aarch64 (BR2_ROOTFS_POST_SCRIPT_ARGS)
# Puts the board's Trellis configuration into the root filesystem: init's (checked
# with the host's `trellis-init --check`) and the runtime's configuration, RAUC's
# system.conf and keyring, the list of the boot slots' files, the release file.
# The keyring is the development CA (scripts/dev-keys.sh into build/keys)
# unless RAUC_KEYRING names a production one.
set -euo pipefail
target=${1:?usage: post-build.sh TARGET_DIR BOARD}
board_name=${2:?usage: post-build.sh TARGET_DIR BOARD}
top=$(cd "$(dirname "$0")/../.." && pwd)
board=$top/board/$board_name
[ -d "$board" ] || { echo "post-build: no board directory $board" >&2; exit 1; }

epoch=${SOURCE_DATE_EPOCH:-$(date +%s)}
mkdir -p "$target/etc/trellis" "$target/etc/rauc" "$target/data" "$target/mnt"
{
  printf '# The build time (board/rpi4/post-build.sh): the clock never starts earlier.\nbuild-time = %s\n\n' "$epoch"
  cat "$board/init.toml"
} >"$target/etc/trellis/init.toml"
# init.toml is on the read-only root filesystem: a malformed one would be fatal
# on every boot of this image (docs/init.md), so the build refuses it, checked by
# the host's build of trellis-init exactly as init reads it (`make cli` builds it).
init_check=${TRELLIS_INIT_CHECK:-$top/target/debug/trellis-init}
[ -x "$init_check" ] || {
  echo "post-build: no host trellis-init at $init_check to check init.toml with (make cli, or TRELLIS_INIT_CHECK=PATH)" >&2
  exit 1
}
"$init_check" --check "$target/etc/trellis/init.toml" || {
  echo "post-build: $board/init.toml is malformed (above; its line N is line N+3 there): the image would not boot" >&2
  exit 1
}
cp "$board/runtime.toml" "$target/etc/trellis/runtime.toml"
# A board without the hardware in its device tree makes it first (the twin: gpio-sim, i2c-stub).
if [ -f "$board/hardware.sh" ]; then
  install -D -m 0755 "$board/hardware.sh" "$target/usr/lib/trellis/hardware.sh"
fi
# What the image's boot slots hold (genimage.cfg, from the board's files and
# Buildroot's BINARIES_DIR), which /usr/lib/trellis/rauc-seed.sh names in RAUC's
# status at first boot: RAUC then skips a boot slot that holds the bundle's boot
# files (install-same=false), and a streamed install does not fetch them.
: "${BINARIES_DIR:?post-build: BINARIES_DIR is not set (Buildroot sets it: the kernel and the boot firmware)}"
"$top/scripts/boot-slots.sh" "$board/genimage.cfg" "$target/usr/share/trellis/boot-slots" "$board" "$BINARIES_DIR"
cp "$board/rauc/system.conf" "$target/etc/rauc/system.conf"
cp "$board/chrony.conf" "$target/etc/trellis/chrony.conf"

keyring=${RAUC_KEYRING:-$top/build/keys/ca.cert.pem}
if [ -z "${RAUC_KEYRING:-}" ] && [ ! -f "$keyring" ]; then
  "$top/scripts/dev-keys.sh" "$top/build/keys" >/dev/null
fi
[ -f "$keyring" ] || { echo "post-build: no RAUC keyring at $keyring" >&2; exit 1; }
cp "$keyring" "$target/etc/rauc/keyring.pem"

# The management API (docs/api.md): the operator CA the device trusts, and the
# device's certificate and key (development: the shared trellis.local identity
# from scripts/dev-keys.sh; production: name per-device files).
api_ca=${API_OPERATOR_CA:-$top/build/keys/api/operator-ca.pem}
api_cert=${API_DEVICE_CERT:-$top/build/keys/api/device.pem}
api_key=${API_DEVICE_KEY:-$top/build/keys/api/device.key}
if [ -z "${API_OPERATOR_CA:-}" ] && [ ! -f "$api_ca" ]; then
  "$top/scripts/dev-keys.sh" "$top/build/keys" >/dev/null
fi
for f in "$api_ca" "$api_cert" "$api_key"; do
  [ -f "$f" ] || { echo "post-build: no API certificate file $f" >&2; exit 1; }
done
install -D -m 0644 "$api_ca" "$target/etc/trellis/api/operator-ca.pem"
install -D -m 0644 "$api_cert" "$target/etc/trellis/api/device.pem"
install -D -m 0600 "$api_key" "$target/etc/trellis/api/device.key"

# Streamed firmware updates (docs/update.md): the CA whose servers the device
# streams bundles from over HTTPS (development: scripts/dev-keys.sh's origin CA;
# production: UPDATE_ORIGIN_CA, a CA file or a bundle of them). The device presents
# its API certificate to them ([update.stream-tls] in runtime.toml).
origin_ca=${UPDATE_ORIGIN_CA:-$top/build/keys/api/origin-ca.pem}
if [ -z "${UPDATE_ORIGIN_CA:-}" ] && [ ! -f "$origin_ca" ]; then
  "$top/scripts/dev-keys.sh" "$top/build/keys" >/dev/null
fi
[ -f "$origin_ca" ] || { echo "post-build: no update origin CA at $origin_ca" >&2; exit 1; }
install -D -m 0644 "$origin_ca" "$target/etc/trellis/update/origin-ca.pem"

# Fleet releases (docs/fleet.md): the public key whose signatures the device's
# fleet agent accepts (development: scripts/dev-keys.sh's; production: FLEET_RELEASE_KEY).
release_key=${FLEET_RELEASE_KEY:-$top/build/keys/release.pub}
if [ -z "${FLEET_RELEASE_KEY:-}" ] && [ ! -f "$release_key" ]; then
  "$top/scripts/dev-keys.sh" "$top/build/keys" >/dev/null
fi
[ -f "$release_key" ] || { echo "post-build: no release-signing public key at $release_key" >&2; exit 1; }
install -D -m 0644 "$release_key" "$target/etc/trellis/fleet/trust/release.pub"

# Apps (docs/app-format.md): the public key whose signatures the runtime trusts,
# in its trust directory (development: scripts/dev-keys.sh's; production:
# APP_TRUST_KEY=path; APP_TRUST_KEY=none trusts no key). Apps signed with it may
# carry code precompiled for the Pi, which the runtime runs as native code.
if [ "${APP_TRUST_KEY:-}" = none ]; then
  rm -f "$target/etc/trellis/trust/apps.pub"
else
  app_key=${APP_TRUST_KEY:-$top/build/keys/apps.pub}
  if [ -z "${APP_TRUST_KEY:-}" ] && [ ! -f "$app_key" ]; then
    "$top/scripts/dev-keys.sh" "$top/build/keys" >/dev/null
  fi
  [ -f "$app_key" ] || { echo "post-build: no app-signing public key at $app_key" >&2; exit 1; }
  install -D -m 0644 "$app_key" "$target/etc/trellis/trust/apps.pub"
fi

version=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)
printf 'TRELLIS_VERSION=%s\nTRELLIS_BOARD=%s\nTRELLIS_BUILD_TIME=%s\n' "$version" "$board_name" "$epoch" \
  >"$target/etc/trellis/release"
rm -f "$target/README.md"
