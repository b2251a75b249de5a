################################################################################
#
# trellis-boot
#
################################################################################

TRELLIS_BOOT_VERSION = $(TRELLIS_VERSION)
TRELLIS_BOOT_SITE = $(TRELLIS_SRC)
TRELLIS_BOOT_SITE_METHOD = local
TRELLIS_BOOT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(TRELLIS_RSYNC_EXCLUSIONS)
TRELLIS_BOOT_LICENSE = Apache-2.0
TRELLIS_BOOT_LICENSE_FILES = LICENSE

define TRELLIS_BOOT_BUILD_CMDS
	$(call TRELLIS_CARGO_BUILD,-p trellis-boot --bins)
endef

define TRELLIS_BOOT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(TRELLIS_CARGO_OUT)/trellis-boot $(TARGET_DIR)/usr/bin/trellis-boot
endef

$(eval $(cargo-package))
