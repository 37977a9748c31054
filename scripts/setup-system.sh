#!/usr/bin/env bash
# Installs the Debian packages the build needs, only those missing: a C/C++ toolchain,
# pkg-config, cmake, clang and libclang-dev (llama.cpp is compiled from source), python3 with
# pip and venv (the default model is fetched through pip; the gateway test uses the openai
# package in a virtual environment), iproute2, nftables and curl (network-namespace tests: the
# NAT test routes through a masquerading namespace) and nodejs/npm (foundry tooling). Used by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

missing=()
command -v npm >/dev/null || missing+=(nodejs npm)
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v ip >/dev/null || missing+=(iproute2)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
python3 -c "import ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
command -v cmake >/dev/null || missing+=(cmake)
command -v clang >/dev/null || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "error: cargo is not installed; install Rust (https://rustup.rs) and run this again" >&2
    exit 1
fi
echo "system packages: ok"
