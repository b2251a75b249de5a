# Trellis: the one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO      ?= cargo
BUILD      ?= build
WASM_OUT   := wasm-apps/target/wasm32-wasip2/release
EXAMPLES   := blinky thermostat counter publisher subscriber
TRELLIS    := target/debug/trellis

.PHONY: help setup apps cli lint test demo bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what the build and tests need (apt packages, Rust targets)
	@scripts/setup.sh

cli: ## Build the trellis CLI (debug)
	$(CARGO) build -p trellis-cli

apps: cli ## Build the example apps for wasm32-wasip2 and pack them into build/apps/
	cd wasm-apps && $(CARGO) build --release --target wasm32-wasip2
	@mkdir -p $(BUILD)/apps
	@for app in $(EXAMPLES); do \
	  $(TRELLIS) app pack $(WASM_OUT)/$$app.wasm -m wasm-apps/examples/$$app/trellis.toml -o $(BUILD)/apps/$$app.wasm || exit 1; \
	done

lint: ## rustfmt, clippy (both workspaces, warnings are errors), shellcheck
	$(CARGO) fmt --all --check
	cd wasm-apps && $(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	cd wasm-apps && $(CARGO) clippy --target wasm32-wasip2 --all-targets -- -D warnings
	shellcheck scripts/*.sh .ci/run

test: setup lint apps ## Everything: setup, lints, apps, unit and integration tests
	$(CARGO) test --workspace --all-features

demo: setup apps ## Run the example apps on simulated hardware and swap one live
	@scripts/demo.sh $(BUILD)

bench: setup apps ## Benchmarks (results: see docs/benchmarks.md)
	$(CARGO) bench -p trellis-runtime --bench runtime

clean: ## Remove build output
	$(CARGO) clean
	cd wasm-apps && $(CARGO) clean
	rm -rf $(BUILD)
