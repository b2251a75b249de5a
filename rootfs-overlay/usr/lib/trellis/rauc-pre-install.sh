#!/bin/sh
# RAUC's pre-install handler ([handlers] pre-install= in /etc/rauc/system.conf;
# RAUC runs a handler without arguments): rebuilds a slot's new root filesystem
# from the slot the device runs and the bundle's delta, so RAUC's adaptive
# install finds its blocks in the slot instead of fetching them. Never fails the
# install: what it cannot rebuild, RAUC fetches.
exec /usr/bin/trellis-delta rauc-pre-install
