#!/usr/bin/env bash
# Packages the three node binaries for one target: lloom-<node>-vX.Y.Z-<os>-<arch>.tar.gz (a
# .zip for Windows), each with README.md and LICENSE, plus a SHA256SUMS file.
#
# Usage: scripts/package.sh vX.Y.Z TARGET_TRIPLE BINARY_DIR OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:?version}" target="${2:?target triple}" bin_dir="${3:?binary dir}" out="${4:?output dir}"

case "$target" in
    x86_64-*) arch=amd64 ;;
    aarch64-*) arch=arm64 ;;
    *) arch="${target%%-*}" ;;
esac
case "$target" in
    *-linux-*) os=linux ;;
    *-apple-darwin) os=darwin ;;
    *-windows-*) os=windows ;;
    *) echo "error: unsupported target $target" >&2; exit 2 ;;
esac
exe=""; [ "$os" = windows ] && exe=".exe"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for node in client executor validator; do
    binary="$bin_dir/lloom-$node$exe"
    [ -f "$binary" ] || { echo "error: $binary not found; build it first" >&2; exit 1; }
    name="lloom-$node-$version-$os-$arch"
    mkdir -p "$work/$name"
    cp "$binary" README.md LICENSE "$work/$name/"
    if [ "$os" = windows ]; then
        (cd "$work" && zip -qr "$out/$name.zip" "$name")
    else
        tar -C "$work" -czf "$out/$name.tar.gz" "$name"
    fi
done
(cd "$out" && sha256sum lloom-*-"$version"-"$os"-"$arch".* > SHA256SUMS)
echo "packaged into $out:"
cat "$out/SHA256SUMS"
