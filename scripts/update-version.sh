#!/usr/bin/env bash
# Sets the version of every crate (all use the workspace version), the lock file and the
# version strings in the docs.
#
# Usage: scripts/update-version.sh X.Y.Z[-alpha.N|-beta.N|-rc.N]      (a leading v is accepted)
set -euo pipefail
cd "$(dirname "$0")/.."

SEMVER='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc)\.(0|[1-9][0-9]*))?$'
input="${1:-}"
new="${input#v}"
if [[ ! "$new" =~ $SEMVER ]]; then
    echo "error: invalid version '$input': expected X.Y.Z or X.Y.Z-alpha.N, X.Y.Z-beta.N, X.Y.Z-rc.N" >&2
    exit 2
fi

current_version() {
    sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1
}
old="$(current_version)"
if [ -z "$old" ]; then
    echo "error: no version in [workspace.package] of Cargo.toml" >&2
    exit 1
fi

# The workspace version and the version of the lloom-core workspace dependency.
sed -i "/^\[workspace.package\]/,/^\[/ s/^version = \"$old\"$/version = \"$new\"/" Cargo.toml
sed -i "s/^\(lloom-[a-z]* = { path = \"crates\/lloom-[a-z]*\", version = \)\"$old\"/\1\"$new\"/" Cargo.toml
# Version strings in the docs (dependency lines and tags), not the changelog's history.
{ grep -rlE "(lloom-[a-z]+ = \"|v)$old\b" README.md docs/src 2>/dev/null || true; } | while read -r file; do
    sed -i -E "s/(lloom-[a-z]+ = \")$old\"/\1$new\"/g; s/\bv$old\b/v$new/g" "$file"
done
# The lock file records the workspace members' versions.
cargo update --workspace --offline --quiet

if [ "$(current_version)" != "$new" ]; then
    echo "error: Cargo.toml still says $(current_version)" >&2
    exit 1
fi
echo "version: $old -> $new"
