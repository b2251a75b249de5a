################################################################################
#
# trellis-runtime
#
################################################################################

TRELLIS_RUNTIME_VERSION = $(TRELLIS_VERSION)
TRELLIS_RUNTIME_SITE = $(TRELLIS_SRC)
TRELLIS_RUNTIME_SITE_METHOD = local
TRELLIS_RUNTIME_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(TRELLIS_RSYNC_EXCLUSIONS)
TRELLIS_RUNTIME_LICENSE = Apache-2.0
TRELLIS_RUNTIME_LICENSE_FILES = LICENSE

# The runtime with the kernel's GPIO/I2C/SPI and RAUC over D-Bus; the CLI
# without `trellis run` (no second wasmtime).
define TRELLIS_RUNTIME_BUILD_CMDS
	$(call TRELLIS_CARGO_BUILD,-p trellis-runtime --features linux --bins)
	$(call TRELLIS_CARGO_BUILD,-p trellis-cli --no-default-features --bins)
endef

define TRELLIS_RUNTIME_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(TRELLIS_CARGO_OUT)/trellis-runtime $(TARGET_DIR)/usr/bin/trellis-runtime
	$(INSTALL) -D -m 0755 $(@D)/$(TRELLIS_CARGO_OUT)/trellis $(TARGET_DIR)/usr/bin/trellis
endef

$(eval $(cargo-package))
