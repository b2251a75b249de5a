################################################################################
#
# trellis-delta
#
################################################################################

TRELLIS_DELTA_VERSION = $(TRELLIS_VERSION)
TRELLIS_DELTA_SITE = $(TRELLIS_SRC)
TRELLIS_DELTA_SITE_METHOD = local
TRELLIS_DELTA_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(TRELLIS_RSYNC_EXCLUSIONS)
TRELLIS_DELTA_LICENSE = Apache-2.0
TRELLIS_DELTA_LICENSE_FILES = LICENSE

define TRELLIS_DELTA_BUILD_CMDS
	$(call TRELLIS_CARGO_BUILD,-p trellis-delta --bins)
endef

define TRELLIS_DELTA_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(TRELLIS_CARGO_OUT)/trellis-delta $(TARGET_DIR)/usr/bin/trellis-delta
endef

$(eval $(cargo-package))
