#!/usr/bin/env bash
# Cuts a release: validates the version, bumps every crate, moves [Unreleased] in CHANGELOG.md
# into a dated section, writes RELEASE_NOTES.md, runs the release checks, builds the
# artifacts, commits and creates the annotated tag, then prints the publishing steps (or runs
# them when credentials are present). See docs/src/developer-guide/releasing.md.
#
# Usage: scripts/release.sh vX.Y.Z[-alpha.N|-beta.N|-rc.N] [regular|hotfix|rc] [--dry-run]
#
# Exit codes: 2 bad arguments, 3 dirty tree or wrong branch, 4 version not greater than the
# current one or tag exists, other non-zero: a check or build failed.
# LLOOM_RELEASE_SKIP_CHECKS=1 / LLOOM_RELEASE_SKIP_BUILD=1 skip the (long) checks and build,
# saying so; the release-process tests use them.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
args=()
for arg in "$@"; do
    case "$arg" in
        --dry-run) dry_run=1 ;;
        *) args+=("$arg") ;;
    esac
done
version="${args[0]:-}"
kind="${args[1]:-regular}"

SEMVER='^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(alpha|beta|rc)\.(0|[1-9][0-9]*))?$'
if [[ ! "$version" =~ $SEMVER ]]; then
    echo "error: invalid version '$version': expected vX.Y.Z or vX.Y.Z-alpha.N, vX.Y.Z-beta.N, vX.Y.Z-rc.N" >&2
    exit 2
fi
number="${version#v}"
patch="${BASH_REMATCH[3]}"
pre="${BASH_REMATCH[5]}"
case "$kind" in
    regular) [ -z "$pre" ] || [ "$pre" != rc ] || { echo "error: $version is a release candidate: use 'rc'" >&2; exit 2; } ;;
    rc) [ "$pre" = rc ] || { echo "error: an rc release needs a version like vX.Y.Z-rc.N" >&2; exit 2; } ;;
    hotfix) { [ -z "$pre" ] && [ "$patch" -gt 0 ]; } || { echo "error: a hotfix is a patch release: vX.Y.Z with Z > 0" >&2; exit 2; } ;;
    *) echo "error: invalid release type '$kind': expected regular, hotfix or rc" >&2; exit 2 ;;
esac

if [ -n "$(git status --porcelain)" ]; then
    echo "error: the working tree has uncommitted changes; commit or stash them first" >&2
    exit 3
fi
current="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
if [ "$(python3 scripts/semver-compare.py "$number" "$current")" != 1 ]; then
    echo "error: $version is not greater than the current version $current" >&2
    exit 4
fi
if git rev-parse -q --verify "refs/tags/$version" >/dev/null; then
    echo "error: tag $version already exists" >&2
    exit 4
fi
branch="$(git rev-parse --abbrev-ref HEAD)"
release_branch="release/v${number%%-*}"
if [ "$kind" = hotfix ] && [[ "$branch" != hotfix/* ]]; then
    echo "error: hotfixes are cut from a hotfix/ branch made from the previous tag (git checkout -b hotfix/$version <previous tag>)" >&2
    exit 3
fi
today="$(date -u +%Y-%m-%d)"

step() { printf '==> %s\n' "$*"; }
if [ "$dry_run" = 1 ]; then
    echo "dry run: $kind release $version (current $current), nothing will change"
    [ "$kind" != hotfix ] && [ "$branch" != "$release_branch" ] && echo "  would create branch $release_branch"
    echo "  would run scripts/update-version.sh $number"
    echo "  would move [Unreleased] in CHANGELOG.md to [$number] - $today and write RELEASE_NOTES.md"
    echo "  would run make release-checks and make release-build VERSION=$version"
    echo "  would commit 'chore: release $version' and create the annotated tag $version"
    exit 0
fi

if [ "$kind" != hotfix ] && [ "$branch" != "$release_branch" ]; then
    step "branch $release_branch"
    git checkout -q -b "$release_branch"
fi

step "version $current -> $number"
scripts/update-version.sh "$number"

step "changelog and release notes"
python3 - "$number" "$today" "$version" "$kind" <<'PY'
import re, sys
number, today, version, kind = sys.argv[1:]
text = open("CHANGELOG.md").read()
head, sep, rest = text.partition("## [Unreleased]")
if not sep:
    sys.exit("error: CHANGELOG.md has no [Unreleased] section")
m = re.search(r"^## \[", rest, re.M)
body, tail = (rest[: m.start()], rest[m.start():]) if m else (rest, "")
notes = body.strip()
if not notes:
    sys.exit("error: [Unreleased] in CHANGELOG.md is empty: nothing to release")
open("CHANGELOG.md", "w").write(f"{head}## [Unreleased]\n\n## [{number}] - {today}\n\n{notes}\n\n{tail}".rstrip() + "\n")
kinds = {"regular": "Release", "rc": "Release candidate", "hotfix": "Hotfix release"}
open("RELEASE_NOTES.md", "w").write(
    f"# Lloom {version}\n\n{kinds[kind]} of {today}. All crates (lloom-core, lloom-client, "
    f"lloom-executor, lloom-validator) are at {number}.\n\n{notes}\n"
)
PY

if [ -n "${LLOOM_RELEASE_SKIP_CHECKS:-}" ]; then
    step "release checks: skipped (LLOOM_RELEASE_SKIP_CHECKS is set)"
else
    step "release checks"
    make release-checks
fi
if [ -n "${LLOOM_RELEASE_SKIP_BUILD:-}" ]; then
    step "release build: skipped (LLOOM_RELEASE_SKIP_BUILD is set)"
else
    step "release build"
    make release-build VERSION="$version"
fi

step "commit and tag"
git add -A
git commit -q -m "chore: release $version"
git tag -a "$version" -F RELEASE_NOTES.md

prerelease=""
if [ -n "$pre" ]; then prerelease="--prerelease "; fi
remote_steps=(
    "git push origin $(git rev-parse --abbrev-ref HEAD) $version"
    "make publish-crates PUBLISH=1"
    "gh release create $version --title 'Lloom $version' --notes-file RELEASE_NOTES.md ${prerelease}dist/*"
    "docker buildx bake --push (or docker build/push for docker/*.Dockerfile, tags $number and latest)"
)
if [ -n "${CARGO_REGISTRY_TOKEN:-}" ] && [ -n "${GH_TOKEN:-}" ] && [ -z "${LLOOM_RELEASE_PRINT_ONLY:-}" ]; then
    step "publishing (credentials present)"
    git push origin "$(git rev-parse --abbrev-ref HEAD)" "$version"
    make publish-crates PUBLISH=1
    gh release create "$version" --title "Lloom $version" --notes-file RELEASE_NOTES.md $prerelease dist/*
else
    step "tagged $version locally; to publish, run:"
    for s in "${remote_steps[@]}"; do echo "  $s"; done
fi
