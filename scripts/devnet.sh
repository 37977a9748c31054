#!/usr/bin/env bash
# A local devnet with settlement: anvil on a free port, the settlement contract deployed, a
# validator and an executor (default model, settling every 10 s) wired to it, all on
# 127.0.0.1 with mDNS off. Prints how to point a client at it; Ctrl-C stops everything.
#
# Usage: scripts/devnet.sh [--model-path PATH]    (extra arguments go to `lloom-executor start`)
# Environment: LLOOM_DEVNET_DIR (state, default: a temporary directory); LLOOM_CPU=native
# (llama.cpp built for this CPU's AVX-512/AMX kernels: scripts/cpu-tuned-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LLOOM_CPU:-}" = native ]; then eval "$(./scripts/cpu-tuned-env.sh)"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lloom/target}"
export PATH="$HOME/.cargo/bin:$PATH"

[ -x node_modules/.bin/anvil ] || npm install --no-audit --no-fund --loglevel=error >&2
cargo build --quiet --locked -p lloom-client -p lloom-executor -p lloom-validator >&2
bin="$CARGO_TARGET_DIR/debug"
dir="${LLOOM_DEVNET_DIR:-$(mktemp -d)}"
mkdir -p "$dir"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# anvil's public development keys: 0 deploys, 1 is the client, 2 the executor (pays gas).
keys=(0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80
      0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d
      0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a)
for i in 0 1 2; do (umask 077 && printf %s "${keys[$i]}" > "$dir/key$i"); done

anvil_bin="$(ls node_modules/@foundry-rs/anvil-*/bin/anvil 2>/dev/null | head -1)"
anvil_bin="${anvil_bin:-node_modules/.bin/anvil}"
"$anvil_bin" --host 127.0.0.1 --port 0 > "$dir/anvil.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "^Listening on" "$dir/anvil.log" && break; sleep 0.1; done
rpc="http://$(sed -n 's/^Listening on //p' "$dir/anvil.log" | head -1)"
[ "$rpc" != "http://" ] || { echo "anvil did not start" >&2; exit 1; }

contract="$("$bin/lloom-client" --key "$dir/key0" chain deploy --rpc-url "$rpc" | grep -o '0x[0-9a-fA-F]\{40\}' | head -1)"
export LLOOM_CHAIN_ID=31337 LLOOM_CONTRACT="$contract"

"$bin/lloom-validator" --data-dir "$dir/validator" --key "$dir/key0" start --no-mdns \
    --listen /ip4/127.0.0.1/tcp/0 > "$dir/validator.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "^listening on" "$dir/validator.log" && break; sleep 0.1; done
bootstrap="$(sed -n 's/^listening on //p' "$dir/validator.log" | head -1)"

"$bin/lloom-executor" --data-dir "$dir/executor" --key "$dir/key2" start --no-mdns \
    --listen /ip4/127.0.0.1/tcp/0 --bootstrap "$bootstrap" --rpc-url "$rpc" \
    --settle-interval-secs 10 "$@" > "$dir/executor.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do grep -q "^settling receipts" "$dir/executor.log" && break; sleep 0.1; done
grep -q "^settling receipts" "$dir/executor.log" || { cat "$dir/executor.log" >&2; exit 1; }

"$bin/lloom-client" --key "$dir/key1" chain deposit 1eth --rpc-url "$rpc" >/dev/null
cat <<INFO
devnet ready (state and logs in $dir)
  export LLOOM_CHAIN_ID=31337 LLOOM_CONTRACT=$contract LLOOM_RPC_URL=$rpc LLOOM_BOOTSTRAP=$bootstrap
  $bin/lloom-client --key $dir/key1 --data-dir $dir/client chat "What is the capital of France?" --no-mdns
  $bin/lloom-executor --key $dir/key2 chain earnings
Ctrl-C stops the devnet.
INFO
wait
