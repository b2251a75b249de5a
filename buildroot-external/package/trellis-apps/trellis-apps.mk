################################################################################
#
# trellis-apps
#
################################################################################

TRELLIS_APPS_VERSION = $(TRELLIS_VERSION)
TRELLIS_APPS_SITE = $(TRELLIS_SRC)
TRELLIS_APPS_SITE_METHOD = local
# Only the packed apps and the license.
TRELLIS_APPS_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--include /LICENSE --include /build/ --include /build/apps/ \
	--include '/build/apps/*.wasm' --exclude '*'
TRELLIS_APPS_LICENSE = Apache-2.0
TRELLIS_APPS_LICENSE_FILES = LICENSE

define TRELLIS_APPS_BUILD_CMDS
	@ls $(@D)/build/apps/*.wasm >/dev/null 2>&1 || { \
		echo "trellis-apps: no apps in $(TRELLIS_SRC)/build/apps: run the top-level 'make apps'" >&2; \
		exit 1; }
endef

define TRELLIS_APPS_INSTALL_TARGET_CMDS
	mkdir -p $(TARGET_DIR)/usr/share/trellis/apps
	$(INSTALL) -m 0644 $(@D)/build/apps/*.wasm $(TARGET_DIR)/usr/share/trellis/apps/
endef

$(eval $(generic-package))
