#!/usr/bin/env bash
# Builds the contract with forge (offline, solcjs through ./solc) and writes the artifact the
# Rust bindings use: crates/lloom-core/artifacts/LloomSettlement.json = { abi, bytecode,
# sources_sha256 } (inside the crate, so the published crate carries it).
#
# Usage: contracts/build.sh           # rebuild and rewrite the artifact
#        contracts/build.sh --check   # fail if the committed artifact is out of date
set -euo pipefail
cd "$(dirname "$0")"
forge=../node_modules/.bin/forge
[ -x "$forge" ] || (cd .. && npm install --no-audit --no-fund --loglevel=error)
"$forge" build --offline --use ./solc --quiet
sources_sha256=$(cat foundry.toml src/*.sol | sha256sum | cut -d' ' -f1)
fresh=$(python3 - "$sources_sha256" <<'PY'
import json, sys
out = json.load(open("out/LloomSettlement.sol/LloomSettlement.json"))
print(json.dumps({
    "contractName": "LloomSettlement",
    "sources_sha256": sys.argv[1],
    "compiler": "solc 0.8.37 (solcjs), optimizer 10000 runs, evm cancun",
    "abi": out["abi"],
    "bytecode": out["bytecode"]["object"],
}, indent=1, sort_keys=True))
PY
)
artifact=../crates/lloom-core/artifacts/LloomSettlement.json
mkdir -p "$(dirname "$artifact")"
if [ "${1:-}" = "--check" ]; then
    if ! diff -q <(echo "$fresh") "$artifact" >/dev/null; then
        echo "crates/lloom-core/artifacts/LloomSettlement.json is out of date: run contracts/build.sh" >&2
        exit 1
    fi
    echo "artifact up to date"
else
    echo "$fresh" > "$artifact"
    echo "wrote crates/lloom-core/artifacts/LloomSettlement.json"
fi
