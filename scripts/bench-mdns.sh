#!/usr/bin/env bash
# Discovery by mDNS alone: time from an executor's start (the process is launched) until a
# client in another network namespace lists its model, with no validator and no address given.
#
#   sudo scripts/bench-mdns.sh [RUNS]      # default 10; needs root (network namespaces)
#
# Two namespaces joined by a veth pair are created and removed; multicast stays on that pair.
# Each run starts a fresh executor (the default model, which must be in the model cache) in
# namespace A, then runs `lloom-client models` in namespace B over and over until the model is
# listed; each client run discovers by mDNS from scratch, so the figure includes the client's
# own discovery. Builds the binaries with the perf profile first.
set -euo pipefail

runs="${1:-10}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS]" >&2; exit 2; }
[[ "$(id -u)" == 0 ]] || { echo "bench-mdns: needs root to create network namespaces" >&2; exit 2; }

cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/lloom/target}"
cargo build -q --profile perf -p lloom-executor -p lloom-client
bin="$CARGO_TARGET_DIR/perf"

id=$$
a="lloom-mdns-a-$id" b="lloom-mdns-b-$id" va="lma${id: -5}" vb="lmb${id: -5}"
work="$(mktemp -d)"
executor_pid=""
cleanup() {
    [[ -n "$executor_pid" ]] && kill "$executor_pid" 2>/dev/null && wait "$executor_pid" 2>/dev/null
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$a"
ip netns add "$b"
ip link add "$va" type veth peer name "$vb"
ip link set "$va" netns "$a"
ip link set "$vb" netns "$b"
for side in "$a $va 10.78.0.1" "$b $vb 10.78.0.2"; do
    read -r ns dev addr <<<"$side"
    ip -n "$ns" addr add "$addr/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add 224.0.0.0/4 dev "$dev"
done

"$bin/lloom-executor" --key "$work/executor.key" keys new --format hex >/dev/null
model="SmolLM2-135M-Instruct"
samples=()
for run in $(seq 1 "$runs"); do
    start=$(date +%s%N)
    ip netns exec "$a" "$bin/lloom-executor" --key "$work/executor.key" --data-dir "$work/data" \
        start --listen /ip4/10.78.0.1/tcp/0 --n-ctx 1024 --max-sequences 1 >/dev/null 2>&1 &
    executor_pid=$!
    seen=""
    for _ in $(seq 1 200); do
        if ip netns exec "$b" "$bin/lloom-client" --data-dir "$work/client" models --timeout-secs 5 \
            2>/dev/null | grep -q "$model"; then
            seen=$(date +%s%N)
            break
        fi
    done
    kill -INT "$executor_pid"
    wait "$executor_pid" || true
    executor_pid=""
    [[ -n "$seen" ]] || { echo "run $run: the model was never listed" >&2; exit 1; }
    ms=$(( (seen - start) / 1000000 ))
    samples+=("$ms")
    echo "run $run: ${ms} ms"
done
sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
count=${#samples[@]}
p50=$(sed -n "$(( (count + 1) / 2 ))p" <<<"$sorted")
max=$(tail -n1 <<<"$sorted")
echo "executor start -> model listed by a client via mDNS alone ($count runs): p50 ${p50} ms, max ${max} ms"
