#!/bin/sh
# The network service (init.toml): the hostname from the device's serial
# number, loopback up, then busybox's DHCP client on eth0 in the foreground,
# supervised by init (restarted if it dies). The lease is applied by
# /usr/share/udhcpc/default.script.
#   Pi 4: serial from the device tree (the SoC's serial, as `cat /proc/cpuinfo` shows)
#   elsewhere (the twin): the last six digits of eth0's MAC address
set -u
iface=${TRELLIS_NET_IFACE:-eth0}
serial=""
if [ -r /proc/device-tree/serial-number ]; then
  serial=$(tr -d '\000' </proc/device-tree/serial-number)
fi
if [ -z "$serial" ]; then
  serial=$(sed -n 's/^Serial[[:space:]]*: *//p' /proc/cpuinfo)
fi
if [ -z "$serial" ] && [ -r "/sys/class/net/$iface/address" ]; then
  serial=$(tr -d ':\n' <"/sys/class/net/$iface/address")
fi
# The last 6 characters, lower case: trellis-1a2b3c.
short=$(printf '%s' "${serial:-000000}" | tr 'A-F' 'a-f' | tail -c 6)
hostname "trellis-$short"
echo "network: hostname trellis-$short"
ip link set lo up
ip link set "$iface" up || { echo "network: no interface $iface" >&2; exit 1; }
exec udhcpc -f -i "$iface" -x "hostname:trellis-$short" -s /usr/share/udhcpc/default.script
