#!/bin/sh
# The bundle's slot hook: RAUC writes the same boot image to either boot slot,
# so after writing one, make its cmdline.txt name that slot's root filesystem
# and bootname (trellis-boot fix-cmdline, firmware/boot).
set -e
case "$1" in
  slot-post-install)
    case "$RAUC_SLOT_NAME" in
      boot.0) exec /usr/bin/trellis-boot fix-cmdline "$RAUC_SLOT_DEVICE" A ;;
      boot.1) exec /usr/bin/trellis-boot fix-cmdline "$RAUC_SLOT_DEVICE" B ;;
    esac
    ;;
esac
