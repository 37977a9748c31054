#!/usr/bin/env bash
# Publishes the crates to the registry in dependency order: lloom-core, lloom-client,
# lloom-executor, lloom-validator. A dry run (the default) packages and verifies every crate
# together, as the registry would see them; --publish really publishes (needs
# CARGO_REGISTRY_TOKEN).
#
# Usage: scripts/publish-crates.sh [--publish]
set -euo pipefail
cd "$(dirname "$0")/.."
CRATES=(lloom-core lloom-client lloom-executor lloom-validator)

if [ "${1:-}" != --publish ]; then
    echo "dry run: cargo publish --dry-run for ${CRATES[*]}"
    cargo publish --dry-run --locked --allow-dirty $(printf -- '-p %s ' "${CRATES[@]}")
    echo "dry run passed; publish with: make publish-crates PUBLISH=1"
    exit 0
fi
: "${CARGO_REGISTRY_TOKEN:?set CARGO_REGISTRY_TOKEN to publish}"
for crate in "${CRATES[@]}"; do
    echo "==> publishing $crate"
    cargo publish --locked -p "$crate"
done
