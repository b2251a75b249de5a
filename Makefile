# Trellis: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := rpi4

# Every build of ours goes through clippy-driver (the compiler with clippy's
# lints; warnings are errors): one compile both lints our crates and builds
# them, instead of a separate `cargo clippy` check of every dependency.
# CLIPPY_ARGS is how `cargo clippy` itself hands arguments to clippy-driver.
CARGO      ?= RUSTC_WORKSPACE_WRAPPER="$$(rustup which clippy-driver)" CLIPPY_ARGS=-Dwarnings__CLIPPY_HACKERY__ cargo
BUILD      ?= build
WASM_OUT   := wasm-apps/target/wasm32-wasip2/release
EXAMPLES   := blinky button thermostat counter publisher subscriber
# Apps for edge nodes (docs/fleet.md, "Edge nodes"): packed beside, not seeded into device images.
EDGE_APPS  := aggregator
# Apps in C (wasm-apps/c/NAME, scripts/build-c-app.sh): packed as c-NAME into build/lang-apps/.
C_APPS     := blinky counter
TRELLIS    := target/debug/trellis
# One feature set and one package selection for every host build: the lints'
# check, the tests, the CLI and the twin's harness share one compile of each crate.
HOST_SELECTION := --workspace --all-features
DEVICE     := aarch64-unknown-linux-gnu
# Cross-building for the Pi with Debian's toolchain; tests run under qemu-user.
CROSS_ENV  := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
              CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
              CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"

.PHONY: help setup setup-host runtime-variants lint-build lint-other host-tests lan-tests beside-twin twin-stories lang-apps bench-assets bench-delta bench-swarm bench-lan bench-transport classifier bench-inference cross-inference check qemu-session apps cli cross cross-release twin-image bundle qemu test-twin compare bench-twin fleet-demo bench-fleet setup-br rpi4 qemu-br flash br-check test-aarch64 lint test test-steps demo bench fuzz clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what the build and tests need (apt packages, Rust targets)
	@scripts/setup.sh --cross

setup-host:
	@scripts/setup.sh

cli: ## Build the trellis CLI and the twin's harness (debug; the same build the tests use)
	$(CARGO) build $(HOST_SELECTION) --bins

apps: cli ## Build the example apps for wasm32-wasip2 and pack them into build/apps/ (edge nodes' into build/edge-apps/)
	cd wasm-apps && $(CARGO) build --release --target wasm32-wasip2 $(INFERENCE_EXCLUDE)
	@mkdir -p $(BUILD)/apps
	@for app in $(EXAMPLES); do \
	  $(TRELLIS) app pack $(WASM_OUT)/$$app.wasm -m wasm-apps/examples/$$app/trellis.toml -o $(BUILD)/apps/$$app.wasm || exit 1; \
	done
	@mkdir -p $(BUILD)/edge-apps
	@for app in $(EDGE_APPS); do \
	  $(TRELLIS) app pack $(WASM_OUT)/$$app.wasm -m wasm-apps/examples/$$app/trellis.toml -o $(BUILD)/edge-apps/$$app.wasm || exit 1; \
	done

lang-apps: setup apps ## The apps in C and Python (build/lang-apps/), the classifier (build/heavy-apps/), the Python ones and the classifier precompiled for the Pi and signed (build/pi-apps/): not seeded into device images
	$(MAKE) --no-print-directory classifier
	scripts/python-apps.sh $(BUILD) $(TRELLIS)
	@mkdir -p $(BUILD)/lang-apps
	@for app in $(C_APPS); do \
	  scripts/build-c-app.sh wasm-apps/c/$$app $(BUILD)/c/$$app.wasm \
	    && $(TRELLIS) app pack $(BUILD)/c/$$app.wasm -m wasm-apps/c/$$app/trellis.toml -o $(BUILD)/lang-apps/c-$$app.wasm || exit 1; \
	done

# The classifier example (MobileNetV2 on rten or tract, wasm-apps/inference): built apart from
# the other apps with its own profile (opt-level 3) and Wasm SIMD (simd128, relaxed-simd), packed
# into build/heavy-apps/ (not seeded into device images; build/pi-apps/ holds it precompiled for
# the Pi and signed), with its native benchmark for the host.
INFERENCE_EXCLUDE := --workspace --exclude classifier --exclude classifier-bench --exclude trellis-inference
WASM_SIMD := CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"
# INFERENCE_FEATURES: the engines besides rten (`make bench-inference` adds tract).
INFERENCE_FEATURES ?=
# NATIVE_PROFILE: classifier-bench's profile (wasm-apps/Cargo.toml): `agreement` for the tests,
# `inference` (the Wasm build's) for `make bench-inference`.
NATIVE_PROFILE ?= agreement
classifier: cli
	scripts/models.sh
	cd wasm-apps && $(WASM_SIMD) $(CARGO) build --profile inference --target wasm32-wasip2 -p classifier $(INFERENCE_FEATURES)
	cd wasm-apps && $(CARGO) build --profile $(NATIVE_PROFILE) -p classifier-bench $(INFERENCE_FEATURES)
	@mkdir -p $(BUILD)/heavy-apps $(BUILD)/pi-apps
	$(TRELLIS) app pack wasm-apps/target/wasm32-wasip2/inference/classifier.wasm \
	  -m wasm-apps/examples/classifier/trellis.toml -o $(BUILD)/heavy-apps/classifier.wasm
	@# For the Pi: compiled ahead of time for aarch64, signed with the development app key the images trust.
	@scripts/dev-keys.sh $(BUILD)/keys >/dev/null
	$(TRELLIS) app precompile $(BUILD)/heavy-apps/classifier.wasm -o $(BUILD)/pi-apps/classifier.wasm
	$(TRELLIS) app sign $(BUILD)/pi-apps/classifier.wasm --key $(BUILD)/keys/apps.key

bench-inference: ## The classifier's inference, Wasm (through the runtime) vs native, same engine (rten, tract), one thread
	$(MAKE) --no-print-directory classifier INFERENCE_FEATURES="--features trellis-inference/tract" NATIVE_PROFILE=inference
	scripts/bench-inference.sh $(BUILD)

# The classifier's native benchmark for the Pi (aarch64), in NATIVE_PROFILE: the twin's classifier
# test runs it in the guest beside the app (`agreement`); on a Pi, build it with
# NATIVE_PROFILE=inference (the app's) and run it beside the app for the board's ratio.
cross-inference: setup
	scripts/models.sh
	cd wasm-apps && $(CROSS_ENV) $(CARGO) build --profile $(NATIVE_PROFILE) --target $(DEVICE) -p classifier-bench

cross: ## Build the device binaries (init, runtime) for the Pi (aarch64, glibc)
	$(CROSS_ENV) $(CARGO) build --target $(DEVICE) -p trellis-init -p trellis-runtime -p trellis-boot --features trellis-runtime/linux --bins

# The device's binaries, one build: the device's CLI without `trellis run` (no wasmtime),
# the runtime with the Linux backends.
DEVICE_SELECTION := --no-default-features --bins \
  -p trellis-init -p trellis-runtime -p trellis-boot -p trellis-delta -p trellis-cli -p trellis-hal \
  --features trellis-runtime/linux,trellis-hal/linux

cross-release:
	$(CROSS_ENV) $(CARGO) build --release --target $(DEVICE) $(DEVICE_SELECTION)

# The twin's root filesystem with the runtime rebuilt from a copy of the source, unchanged
# and with one line changed (build/twin/variants/; the code-change update test's releases).
runtime-variants: twin-image
	DEVICE_SELECTION="$(DEVICE_SELECTION)" scripts/runtime-variant.sh $(BUILD) $(BUILD)/twin/variants base log-line

twin-image: setup apps cross-release ## Build the device twin's disk image (build/twin/trellis.img)
	scripts/twin-image.sh $(BUILD)

bundle: twin-image ## Sign a RAUC update bundle from the twin's slot images (build/twin/update.raucb)
	scripts/twin-bundle.sh $(BUILD)

qemu: cli twin-image ## Boot the twin interactively with the example apps (Ctrl-A X quits)
	@if [ ! -f $(BUILD)/twin/qemu.img ] || [ $(BUILD)/twin/trellis.img -nt $(BUILD)/twin/qemu.img ]; then \
	  cp --sparse=always $(BUILD)/twin/trellis.img $(BUILD)/twin/qemu.img; fi
	target/debug/trellis-twin $(BUILD)/twin/qemu.img

qemu-session: ## `make qemu` with a scripted session: the example apps run, then it powers off
	scripts/qemu-session.sh

# The twin's stories, built with the host selection (one compile of their dependencies, see
# HOST_SELECTION): every test file of tests/twin, and the harness's own unit tests.
TWIN_TESTS := $(patsubst tests/twin/tests/%.rs,--test %,$(wildcard tests/twin/tests/*.rs))

test-twin: bundle runtime-variants lang-apps cross-inference ## The device-twin tests: boot the image in QEMU and play the user's stories
	$(MAKE) --no-print-directory twin-stories

# The stories alone, on the image and apps already built (`make test` builds them first).
twin-stories:
	$(CARGO) test $(HOST_SELECTION) --lib $(TWIN_TESTS) -- --test-threads=1

setup-br:
	@scripts/setup.sh --buildroot

rpi4: setup-br apps ## Build the Pi 4 card image and update bundle with Buildroot (output/rpi4/images/; needs the internet); DELTA_FROM=OLD/rootfs.squashfs adds the firmware delta
	scripts/buildroot.sh $(BUILD) trellis_rpi4_defconfig output/rpi4

qemu-br: setup-br apps ## The same for the twin's board with Buildroot (output/qemu-aarch64/images/)
	scripts/buildroot.sh $(BUILD) trellis_qemu_aarch64_defconfig output/qemu-aarch64

flash: ## Write the card: make flash DEV=/dev/sdX [IMAGE=output/rpi4/images/sdcard.img] [FORCE=1]
	@test -n "$(DEV)" || { echo "make flash DEV=/dev/sdX (the SD card reader's whole disk)"; exit 1; }
	scripts/flash.sh $(or $(IMAGE),output/rpi4/images/sdcard.img) $(DEV)

br-check: ## Check the Buildroot tree against Buildroot itself: make br-check BUILDROOT=DIR
	@test -n "$(BUILDROOT)" || { echo "make br-check BUILDROOT=DIR (a Buildroot 2026.05.1 tree)"; exit 1; }
	BUILDROOT=$(abspath $(BUILDROOT)) scripts/br-check.sh

compare: cli bundle ## Both update paths on the twin in one run: one table (also build/compare.md)
	target/debug/trellis-compare --build $(BUILD) --out $(BUILD)/compare.md

bench-twin: bundle ## The twin's benchmarks: boot time, rootfs size, memory, partial update in QEMU
	$(CARGO) bench -p trellis-twin --bench twin

test-aarch64: ## Run init's tests as aarch64 binaries under qemu-user
	$(CROSS_ENV) $(CARGO) test --target $(DEVICE) -p trellis-init

lint: lint-build lint-other ## rustfmt, clippy (both workspaces, warnings are errors), shellcheck

# rustfmt, then the host's build through clippy-driver (see CARGO): this is the clippy run,
# and the build the tests use.
lint-build:
	$(CARGO) fmt --all --check
	cd wasm-apps && $(CARGO) fmt --all --check
	$(CARGO) test $(HOST_SELECTION) --all-targets --no-run

# clippy on the apps' workspace, and shellcheck.
lint-other:
	scripts/models.sh
	cd wasm-apps && $(CARGO) clippy --target wasm32-wasip2 --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run board/*/*.sh board/*/rauc/*.sh rootfs-overlay/usr/lib/trellis/*.sh rootfs-overlay/usr/share/udhcpc/default.script

# The host tests: everything but the twin's stories (they need the image).
TEST_SELECTION := $(HOST_SELECTION) --exclude trellis-twin

check: setup lint-build ## The inner loop: rustfmt, clippy, shellcheck and the host tests (no aarch64, no twin)
	$(MAKE) --no-print-directory apps lang-apps
	$(MAKE) --no-print-directory host-tests
	$(MAKE) --no-print-directory lan-tests

# What `make check` runs once the host's build and the apps are there (the LAN's tests apart).
host-tests: lint-other
	$(CARGO) test $(TEST_SELECTION) -- --skip on_a_lan_
	scripts/own-app.sh $(BUILD)

# The tests of a site's LAN in network namespaces (root; ota/cli/tests/swarm.rs): apart from
# the host's tests, so their sixteen processes never run beside the twin's rate measurements.
lan-tests:
	$(CARGO) test $(TEST_SELECTION) --test swarm

test: setup ## Everything: `make check`, `make demo`, aarch64, the Buildroot tree, the twin's stories, `make qemu`, `make fleet-demo`
	@# The twin's kernel builds at the lowest priority beside the rest (scripts/background.sh).
	scripts/background.sh $(BUILD)/twin/kernel.log scripts/twin-kernel.sh --cache-only -- \
	  $(MAKE) --no-print-directory test-steps

# `make check` in two parts: the builds first, then, once the twin's image is there (it
# waits for the kernel), the host's tests beside the twin's stories (scripts/background.sh
# --wait; QEMU leaves a third of the two cores idle). The LAN's tests, which mostly wait on
# their 10 Mbit/s link, run beside `make qemu`'s session, which has no rate to measure.
test-steps: setup lint-build
	$(MAKE) --no-print-directory apps lang-apps cross-inference
	$(MAKE) --no-print-directory demo
	$(MAKE) --no-print-directory cross-release
	scripts/aarch64-smoke.sh $(BUILD)
	$(MAKE) --no-print-directory bundle runtime-variants
	scripts/background.sh --wait $(BUILD)/host-tests.log $(MAKE) --no-print-directory host-tests beside-twin -- \
	  $(MAKE) --no-print-directory twin-stories
	scripts/background.sh --wait $(BUILD)/lan-tests.log $(MAKE) --no-print-directory lan-tests -- \
	  $(MAKE) --no-print-directory qemu-session
	$(MAKE) --no-print-directory fleet-demo

# The host's checks that need neither the twin nor the apps' files to stay put.
beside-twin:
	scripts/br-check.sh
	scripts/test-flash.sh
	$(MAKE) --no-print-directory test-aarch64

fleet-demo: cli bundle ## A fleet here: a NATS server, two twins (QEMU), simulated devices; an app rollout, then a firmware one that halts
	target/debug/trellis-fleet-demo --build $(BUILD)

demo: setup-host apps ## Run the example apps on simulated hardware and swap one live
	@scripts/demo.sh $(BUILD)

bench: setup-host apps ## Benchmarks: the runtime's, the fleet's, then the twin's (results: see docs/benchmarks.md)
	$(CARGO) bench -p trellis-runtime --bench runtime
	$(MAKE) --no-print-directory bench-inference
	$(MAKE) --no-print-directory bench-assets
	$(MAKE) --no-print-directory bench-fleet
	$(MAKE) --no-print-directory bench-swarm
	$(MAKE) --no-print-directory bench-lan
	$(MAKE) --no-print-directory bench-transport
	$(MAKE) --no-print-directory bench-delta
	$(MAKE) --no-print-directory bench-twin

bench-assets: cli ## Assets on demand behind a shaped link (netns, tc; root): on the device, whole download, on demand, on demand with the recorded push
	$(CARGO) build --release -p trellis-assets --example ondemand
	scripts/bench-assets.sh $(TRELLIS) target/release/examples/ondemand

bench-fleet: cli apps ## The fleet's benchmark: deploy → all running for 10, 100, 1000 devices, beside pushing one by one
	$(CARGO) bench -p trellis-fleet --all-features --bench fleet

bench-swarm: ## A site's swarm in the discrete-event simulation: 8 to 10,000 devices, rarest-first vs random vs in order, beside the Kumar-Ross bound and client-server
	$(CARGO) bench -p trellis-swarm --bench swarm

bench-lan: ## A site's LAN in network namespaces (root): 8, 16, 32 devices sharing a release, beside the Kumar-Ross bound, client-server and the calibrated simulation
	$(CARGO) bench -p trellis-cli --no-default-features --bench lan

bench-delta: cli cross-release bundle ## What one changed line of the runtime costs to fetch: RAUC's adaptive mode vs casync, xdelta3, zstd --patch-from, the firmware delta (one run)
	@scripts/setup.sh --bench
	DEVICE_SELECTION="$(DEVICE_SELECTION)" scripts/bench-delta.sh $(BUILD)

bench-transport: ## What a library for the LAN's transport would add to the device: bao-tree, and iroh with iroh-blobs, beside tokio and rustls (aarch64, stripped, in a squashfs), each run once
	scripts/transport-size.sh $(BUILD)

fuzz: ## Fuzz the API's request parsing, the manifest parser and the app file reader with libFuzzer (nightly; FUZZ_SECONDS=60 each)
	@scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

clean: ## Remove build output
	$(CARGO) clean
	cd wasm-apps && $(CARGO) clean
	rm -rf $(BUILD)
