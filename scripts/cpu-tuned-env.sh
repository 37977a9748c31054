#!/usr/bin/env bash
# Prints the environment for a build of llama.cpp (the embedded engine) tuned to this CPU:
# the AVX-512, VNNI and AMX kernels where the CPU has them. The default build is portable
# (AVX2), so a binary or build cache that moves to another host keeps working; a tuned one
# dies with SIGILL on a CPU without its instructions, so it gets a build cache of its own,
# named after the instructions it uses.
#
# Usage: eval "$(./scripts/cpu-tuned-env.sh)" && cargo build --release -p lloom-executor
#        LLOOM_CPU=native ./scripts/demo.sh      (demo.sh and devnet.sh eval it themselves)
# Environment: LLOOM_CPUINFO (default /proc/cpuinfo), LLOOM_CACHE (default ~/.cache/lloom).
set -euo pipefail

cpuinfo="${LLOOM_CPUINFO:-/proc/cpuinfo}"
cache="${LLOOM_CACHE:-$HOME/.cache/lloom}"
flags=" $(grep -m1 "^flags" "$cpuinfo" 2>/dev/null | cut -d: -f2- || true) "
has() { for flag in "$@"; do [[ "$flags" == *" $flag "* ]] || return 1; done; }

options=()
names=()
# ggml's GGML_AVX512 compiles for F, CD, VL, DQ and BW together.
if has avx512f avx512cd avx512vl avx512dq avx512bw; then
    options+=(GGML_AVX512)
    names+=(avx512)
    has avx512_vnni && { options+=(GGML_AVX512_VNNI); names+=(vnni); }
    has avx512vbmi && { options+=(GGML_AVX512_VBMI); names+=(vbmi); }
    has avx512_bf16 && { options+=(GGML_AVX512_BF16); names+=(bf16); }
    # ggml's AMX kernels need AVX-512 VNNI beside the tiles.
    if has amx_tile amx_int8 amx_bf16 avx512_vnni; then
        options+=(GGML_AMX_TILE GGML_AMX_INT8 GGML_AMX_BF16)
        names+=(amx)
    fi
elif has avx_vnni; then
    options+=(GGML_AVX_VNNI)
    names+=(avxvnni)
fi

if [ ${#options[@]} -eq 0 ]; then
    echo "# this CPU has nothing beyond the portable build (AVX2): nothing to set"
    exit 0
fi

for option in "${options[@]}"; do echo "export $option=ON"; done
if [[ " ${names[*]} " == *" amx "* ]]; then
    # GCC 12 drops the stores that fill in llama.cpp's AMX tile configuration (ggml's
    # ggml_tile_config_init), so the first tile instruction raises SIGILL; clang compiles it
    # right, and is installed for bindgen anyway. ggml's AMX code is guarded by GCC's macro
    # names (__AMX_INT8__), which clang 14 spells __AMXINT8__: without them it compiles none.
    if ! command -v clang >/dev/null || ! command -v clang++ >/dev/null; then
        echo "cpu-tuned-env: AMX needs clang to build llama.cpp (run scripts/setup-system.sh)" >&2
        exit 1
    fi
    echo "export CC=clang CXX=clang++"
    echo "export CXXFLAGS=\"${CXXFLAGS:+$CXXFLAGS }-D__AMX_TILE__ -D__AMX_INT8__ -D__AMX_BF16__\""
fi
flavor=$(IFS=-; echo "${names[*]}")
echo "export CARGO_TARGET_DIR=\"$cache/target-cpu-$flavor\""
