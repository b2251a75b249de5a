#!/bin/sh
# The twin's wiring: the devices a Pi 4 has from its device tree, made from the
# kernel's own simulators before the runtime starts (init runs this first in the
# runtime's service; it is idempotent, so a restarted runtime finds them as
# they were):
#   - a gpio-sim chip labelled "trellis-gpio" with 54 lines, like the Pi's
#     pinctrl-bcm2711 (GPIO 0-53); tests pull its inputs and read its outputs
#     under /sys/devices/platform/gpio-sim.N/gpiochipM/sim_gpioL/{pull,value};
#   - i2c-stub with one chip at 0x48, where the Pi's TMP102 sits on I2C-1
#     (runtime.toml maps the apps' bus 1 to it by its name, "SMBus stub driver").
# Installed as /usr/lib/trellis/hardware.sh (scripts/twin-rootfs.sh).
set -eu
cfg=/sys/kernel/config
grep -qs " $cfg configfs " /proc/mounts || mount -t configfs configfs "$cfg"
chip=$cfg/gpio-sim/trellis
if [ ! -d "$chip" ]; then
  mkdir "$chip" "$chip/bank0"
  echo 54 >"$chip/bank0/num_lines"
  echo trellis-gpio >"$chip/bank0/label"
fi
[ "$(cat "$chip/live")" = 1 ] || echo 1 >"$chip/live"
grep -qs '^i2c_stub ' /proc/modules || modprobe i2c-stub chip_addr=0x48
