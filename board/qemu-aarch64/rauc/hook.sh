#!/bin/sh
# The bundle's slot hooks.
#   slot-pre-install, root filesystem: before RAUC writes the slot (the bundle
#   checked, the slot marked non-bootable), rebuild the bundle's image into it
#   from the running slot and the bundle's firmware delta (trellis-delta,
#   firmware/delta), so RAUC's adaptive install finds its blocks there instead of
#   fetching them. Never fails the install: without a delta, without the tool (an
#   older image), or when the rebuild fails, RAUC fetches what the slots lack.
#   slot-post-install, boot: RAUC writes the same boot files to either boot slot,
#   so after writing one, make its cmdline.txt name that slot's root filesystem
#   and bootname (trellis-boot fix-cmdline, firmware/boot).
set -e
case "$1" in
  slot-pre-install)
    if [ "$RAUC_SLOT_CLASS" = rootfs ]; then
      /usr/bin/trellis-delta rauc-slot-pre-install 2>&1 || echo "trellis-delta: exit $?; RAUC fetches what the slots lack"
    fi
    exit 0
    ;;
  slot-post-install)
    case "$RAUC_SLOT_NAME" in
      boot.0) exec /usr/bin/trellis-boot fix-cmdline "$RAUC_SLOT_DEVICE" A ;;
      boot.1) exec /usr/bin/trellis-boot fix-cmdline "$RAUC_SLOT_DEVICE" B ;;
    esac
    ;;
esac
