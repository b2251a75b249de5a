################################################################################
#
# trellis-init
#
################################################################################

TRELLIS_INIT_VERSION = $(TRELLIS_VERSION)
TRELLIS_INIT_SITE = $(TRELLIS_SRC)
TRELLIS_INIT_SITE_METHOD = local
TRELLIS_INIT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(TRELLIS_RSYNC_EXCLUSIONS)
TRELLIS_INIT_LICENSE = Apache-2.0
TRELLIS_INIT_LICENSE_FILES = LICENSE

define TRELLIS_INIT_BUILD_CMDS
	$(call TRELLIS_CARGO_BUILD,-p trellis-init --bins)
endef

define TRELLIS_INIT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(TRELLIS_CARGO_OUT)/trellis-init $(TARGET_DIR)/sbin/init
endef

$(eval $(cargo-package))
