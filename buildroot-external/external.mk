################################################################################
#
# Trellis: what the Rust packages share
#
################################################################################

# The repository this external tree lives in: the one Cargo workspace all
# device binaries come from (a local source, copied without build output).
TRELLIS_SRC = $(BR2_EXTERNAL_TRELLIS_PATH)/..
TRELLIS_VERSION := $(shell git -C $(TRELLIS_SRC) describe --always --dirty 2>/dev/null || echo unknown)
TRELLIS_RSYNC_EXCLUSIONS = \
	--exclude /build --exclude /target --exclude /output --exclude /wasm-apps/target

# Crates vendored by the top-level `make rpi4` (cargo vendor) before Buildroot
# runs: Buildroot's cargo vendoring runs at download time, which local
# packages do not have, and the build step is --offline.
TRELLIS_VENDOR_DIR ?= $(TRELLIS_SRC)/build/vendor
TRELLIS_CARGO_OPTS = \
	--offline --locked --release \
	--config 'source.crates-io.replace-with="vendored-sources"' \
	--config 'source.vendored-sources.directory="$(TRELLIS_VENDOR_DIR)"'

# $(1): cargo arguments (-p CRATE --features ...). Run in the package's copy.
define TRELLIS_CARGO_BUILD
	@test -d $(TRELLIS_VENDOR_DIR) || { \
		echo "trellis: no vendored crates in $(TRELLIS_VENDOR_DIR): run the top-level 'make rpi4' (it runs cargo vendor)" >&2; \
		exit 1; }
	cd $(@D) && $(TARGET_MAKE_ENV) $(TARGET_CONFIGURE_OPTS) $(PKG_CARGO_ENV) \
		cargo build $(TRELLIS_CARGO_OPTS) $(1)
endef

# The directory cargo leaves target binaries in.
TRELLIS_CARGO_OUT = target/$(RUSTC_TARGET_NAME)/release

include $(sort $(wildcard $(BR2_EXTERNAL_TRELLIS_PATH)/package/*/*.mk))
