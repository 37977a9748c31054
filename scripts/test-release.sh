#!/usr/bin/env bash
# Tests of the release process, each in a scratch clone of HEAD: version bumps, release.sh's
# refusals and its full local run (tag, changelog, notes), packaging, crate packaging, the
# benchmark regression check, workflow and compose syntax, and the Dockerfile lint.
# Prints "release tests: N passed, M failed" (scripts/test.sh adds it to the summary).
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
passed=0
failed=0
check() { # name, then a command that must succeed
    local name="$1"
    shift
    if out="$("$@" 2>&1)"; then
        echo "ok - $name"
        passed=$((passed + 1))
    else
        echo "not ok - $name"
        echo "$out" | sed 's/^/    /' | tail -20
        failed=$((failed + 1))
    fi
}
scratch() { # a clean clone of HEAD with git identity set
    local dir
    dir="$(mktemp -d)"
    git clone -q "$repo" "$dir/repo"
    git -C "$dir/repo" config user.email release-test@localhost
    git -C "$dir/repo" config user.name "release test"
    echo "$dir/repo"
}
expect_fail() { # expected exit code, expected stderr text, command...
    local code="$1" text="$2"
    shift 2
    local err rc
    err="$("$@" 2>&1 >/dev/null)"
    rc=$?
    [ "$rc" = "$code" ] || { echo "exit $rc, expected $code: $err"; return 1; }
    grep -qF -- "$text" <<<"$err" || { echo "stderr lacks '$text': $err"; return 1; }
}

t_update_version_rejects_bad_versions() {
    local r; r="$(scratch)"
    for bad in 1.2 v1.2.3.4 1.2.3-gamma.1 01.2.3 1.2.3-rc "" latest; do
        expect_fail 2 "error: invalid version '$bad'" "$r/scripts/update-version.sh" "$bad" || return 1
    done
}
t_update_version_bumps_every_crate_and_the_lock() {
    local r; r="$(scratch)"
    (cd "$r" && scripts/update-version.sh 0.2.0-rc.1) || return 1
    grep -q '^version = "0.2.0-rc.1"$' "$r/Cargo.toml" || return 1
    grep -q 'lloom-core = { path = "crates/lloom-core", version = "0.2.0-rc.1" }' "$r/Cargo.toml" || return 1
    local versions
    versions="$(cd "$r" && cargo metadata --offline --no-deps --format-version 1 \
        | python3 -c 'import json,sys; print(sorted({p["version"] for p in json.load(sys.stdin)["packages"]}))')"
    [ "$versions" = "['0.2.0-rc.1']" ] || { echo "$versions"; return 1; }
    grep -A1 'name = "lloom-client"' "$r/Cargo.lock" | grep '0.2.0-rc.1' >/dev/null
}
t_release_refuses_bad_input() {
    local r; r="$(scratch)"
    expect_fail 2 "error: invalid version '0.2.0': expected vX.Y.Z" "$r/scripts/release.sh" 0.2.0 || return 1
    expect_fail 2 "error: invalid release type 'weekly'" "$r/scripts/release.sh" v0.2.0 weekly || return 1
    expect_fail 2 "an rc release needs a version like vX.Y.Z-rc.N" "$r/scripts/release.sh" v0.2.0 rc || return 1
    expect_fail 2 "a hotfix is a patch release" "$r/scripts/release.sh" v0.2.0 hotfix || return 1
    expect_fail 4 "is not greater than the current version" "$r/scripts/release.sh" v0.1.0 || return 1
    expect_fail 4 "is not greater than the current version" "$r/scripts/release.sh" v0.1.0-rc.9 rc || return 1
    touch "$r/dirt"
    expect_fail 3 "uncommitted changes" "$r/scripts/release.sh" v0.2.0
}
t_release_dry_run_changes_nothing() {
    local r before; r="$(scratch)"
    before="$(git -C "$r" rev-parse HEAD)"
    local out
    # Captured first: with pipefail, `grep -q` quitting at the first line would make the
    # script's later writes fail with SIGPIPE, and the test with them, now and then.
    out="$(cd "$r" && scripts/release.sh v0.2.0 --dry-run)" || return 1
    grep -q "dry run: regular release v0.2.0" <<<"$out" || return 1
    [ -z "$(git -C "$r" status --porcelain)" ] || return 1
    [ "$(git -C "$r" rev-parse HEAD)" = "$before" ] || return 1
    [ -z "$(git -C "$r" tag)" ]
}
t_release_cuts_a_tagged_release_locally() {
    local r out; r="$(scratch)"
    out="$(cd "$r" && LLOOM_RELEASE_SKIP_CHECKS=1 LLOOM_RELEASE_SKIP_BUILD=1 LLOOM_RELEASE_PRINT_ONLY=1 \
        scripts/release.sh v0.2.0 2>&1)" || { echo "$out"; return 1; }
    grep -q "release checks: skipped" <<<"$out" || return 1
    grep -q "git push origin release/v0.2.0 v0.2.0" <<<"$out" || { echo "$out"; return 1; }
    [ "$(git -C "$r" cat-file -t v0.2.0)" = tag ] || return 1           # annotated
    [ "$(git -C "$r" rev-parse --abbrev-ref HEAD)" = release/v0.2.0 ] || return 1
    grep -q "^## \[0.2.0\] - $(date -u +%Y-%m-%d)$" "$r/CHANGELOG.md" || return 1
    python3 - "$r/CHANGELOG.md" <<'PY' || return 1
import sys
text = open(sys.argv[1]).read()
unreleased = text.split("## [Unreleased]")[1].split("## [0.2.0]")[0]
assert unreleased.strip() == "", unreleased
PY
    grep -q "^# Lloom v0.2.0" "$r/RELEASE_NOTES.md" || return 1
    grep -q "lloom-validator" "$r/RELEASE_NOTES.md" || return 1
    [ -z "$(git -C "$r" status --porcelain)" ] || return 1
    grep -q '^version = "0.2.0"$' "$r/Cargo.toml"
}
t_package_names_archives_and_checksums() {
    local d bin out; d="$(mktemp -d)"; bin="$d/bin"; out="$d/dist"
    mkdir -p "$bin"
    for n in client executor validator; do printf '#!/bin/sh\necho %s\n' "$n" > "$bin/lloom-$n"; done
    "$repo/scripts/package.sh" v1.2.3 x86_64-unknown-linux-gnu "$bin" "$out" >/dev/null || return 1
    for n in client executor validator; do
        local a="$out/lloom-$n-v1.2.3-linux-amd64.tar.gz"
        [ -f "$a" ] || { echo "missing $a"; return 1; }
        local listing
        listing="$(tar -tzf "$a")" || return 1
        grep -q "lloom-$n-v1.2.3-linux-amd64/README.md" <<<"$listing" || return 1
        grep -q "lloom-$n-v1.2.3-linux-amd64/LICENSE" <<<"$listing" || return 1
        grep -q "lloom-$n-v1.2.3-linux-amd64/lloom-$n$" <<<"$listing" || return 1
    done
    (cd "$out" && sha256sum -c SHA256SUMS >/dev/null) || return 1
    [ "$(wc -l < "$out/SHA256SUMS")" = 3 ] || return 1
    expect_fail 1 "not found" "$repo/scripts/package.sh" v1.2.3 x86_64-unknown-linux-gnu "$d/none" "$out"
}
t_crates_package_in_dependency_order() {
    local r; r="$(scratch)"
    # Packaging every published crate together resolves their path dependencies to versions.
    # Not offline: a published crate leaves the workspace's [patch] (vendor/yamux) behind, so
    # its lock file needs the registry's own yamux, which a fresh machine has never fetched.
    (cd "$r" && cargo package --no-verify --locked -p lloom-core -p lloom-client \
        -p lloom-executor -p lloom-validator >/dev/null 2>&1) || {
        (cd "$r" && cargo package --no-verify --locked -p lloom-core -p lloom-client -p lloom-executor -p lloom-validator 2>&1 | tail -5)
        return 1
    }
    local packages="${CARGO_TARGET_DIR:-$r/target}/package"
    ls "$packages"/lloom-validator-0.1.0.crate >/dev/null || return 1
    # Files the code includes at compile time must be inside the crate (the contract artifact).
    # (grep -q on a pipe would end tar early and fail the pipeline under pipefail)
    local files
    files="$(tar -tzf "$packages"/lloom-core-0.1.0.crate)" || return 1
    grep -q "lloom-core-0.1.0/artifacts/LloomSettlement.json" <<<"$files"
}
t_bench_regressions_are_reported() {
    local d out; d="$(mktemp -d)"
    cat > "$d/ok.log" <<'LOG'
sign                    time:   [33.512 µs 33.901 µs 34.371 µs]
                        change: [-2.1234% +1.2000% +3.5000%] (p = 0.20 > 0.05)
LOG
    cat > "$d/slow.log" <<'LOG'
recover                 time:   [55.512 µs 56.101 µs 56.771 µs]
                        change: [+20.123% +24.400% +28.500%] (p = 0.00 < 0.05)
                        Performance has regressed.
LOG
    # The layout of current criterion releases: the change on its own "time:" line, U+2212 minus.
    cat > "$d/new-ok.log" <<'LOG'
signature/recover       time:   [43.496 µs 43.609 µs 43.759 µs]
                        thrpt:  [22.853 Kelem/s 22.931 Kelem/s 22.990 Kelem/s]
                 change:
                        time:   [−1.5452% −1.2702% −1.0117%] (p = 0.00 < 0.05)
                        thrpt:  [+1.0220% +1.2865% +1.5695%]
                        Performance has improved.
LOG
    cat > "$d/new-slow.log" <<'LOG'
codec/decode_chunk      time:   [96.364 ns 96.533 ns 96.692 ns]
                 change:
                        time:   [+18.0000% +19.8700% +21.0000%] (p = 0.00 < 0.05)
                        thrpt:  [−17.355% −16.577% −15.254%]
                        Performance has regressed.
LOG
    "$repo/scripts/bench-regressions.sh" "$d/new-ok.log" 10 >/dev/null || return 1
    out="$("$repo/scripts/bench-regressions.sh" "$d/new-slow.log" 10 2>&1)" && return 1
    grep -q "regression: codec/decode_chunk: +19.87%" <<<"$out" || { echo "$out"; return 1; }
    "$repo/scripts/bench-regressions.sh" "$d/ok.log" 10 >/dev/null || return 1
    expect_fail 1 "" "$repo/scripts/bench-regressions.sh" "$d/slow.log" 10 || return 1
    out="$("$repo/scripts/bench-regressions.sh" "$d/slow.log" 10 2>&1)"
    grep -q "regression: recover: +24.40%" <<<"$out" || { echo "$out"; return 1; }
}
t_workflows_and_compose_are_valid() {
    python3 - "$repo" <<'PY'
import sys, yaml
repo = sys.argv[1]
ci = yaml.safe_load(open(f"{repo}/.github/workflows/ci.yml"))
release = yaml.safe_load(open(f"{repo}/.github/workflows/release.yml"))
# PyYAML reads the key `on` as True.
assert "push" in ci[True] and "pull_request" in ci[True]
assert release[True]["push"]["tags"] == ["v*"]
steps = " ".join(str(s.get("run", "")) for s in ci["jobs"]["test"]["steps"])
for needed in ["cargo fmt", "cargo clippy", "forge test", "./scripts/test.sh"]:
    assert needed in steps, needed
jobs = release["jobs"]
assert {"build", "github-release", "publish-crates", "docker"} <= set(jobs)
oses = {m["os"].split("-")[0] for m in jobs["build"]["strategy"]["matrix"]["include"]}
assert oses == {"ubuntu", "macos", "windows"}, oses
assert "make publish-crates" in str(jobs["publish-crates"]["steps"])
compose = yaml.safe_load(open(f"{repo}/docker-compose.yml"))
assert {"anvil", "validator", "executor", "gateway"} <= set(compose["services"])
# The executor waits for the validator's /health (the validator image's HEALTHCHECK).
assert compose["services"]["executor"]["depends_on"]["validator"]["condition"] == "service_healthy"
assert "/health" in open(f"{repo}/docker/validator.Dockerfile").read()
for name, service in compose["services"].items():
    assert "build" in service, name
    # A gateway served without API keys is published on the host's loopback alone.
    if "--allow-unauthenticated" in " ".join(service.get("command", [])):
        assert all(p.startswith("127.0.0.1:") for p in service.get("ports", [])), name
PY
}
t_dockerfiles_pass_hadolint() {
    local hadolint="${HADOLINT:-$HOME/.cache/lloom/venv/bin/hadolint}"
    [ -x "$hadolint" ] || { echo "hadolint not installed ($hadolint); run scripts/test.sh"; return 1; }
    "$hadolint" --ignore DL3008 --ignore DL3016 "$repo"/docker/*.Dockerfile || return 1
    for f in "$repo"/docker/{client,executor,validator}.Dockerfile; do
        grep -q '^USER lloom' "$f" && grep -q '^HEALTHCHECK' "$f" && grep -q ' AS build' "$f" || { echo "$f"; return 1; }
    done
}

t_book_link_check_catches_broken_links() {
    local book
    book="$(mktemp -d)"
    printf '<a href="page.html#here">ok</a><a href="https://example.org/x">ext</a>' >"$book/index.html"
    printf '<h1 id="here">Page</h1>' >"$book/page.html"
    python3 "$repo/scripts/check-book-links.py" "$book" || return 1
    printf '<a href="gone.html">broken</a><a href="page.html#there">no anchor</a>' >>"$book/index.html"
    expect_fail 1 "gone.html (no such page)" python3 "$repo/scripts/check-book-links.py" "$book" || return 1
    expect_fail 1 "page.html#there (no such anchor)" python3 "$repo/scripts/check-book-links.py" "$book"
}

t_scripts_parse_and_the_mdns_bench_checks_its_input() {
    for f in "$repo"/scripts/*.sh; do
        bash -n "$f" || { echo "$f does not parse"; return 1; }
    done
    expect_fail 2 "usage:" bash "$repo/scripts/bench-mdns.sh" lots
}

for t in $(declare -F | awk '{print $3}' | grep '^t_'); do
    check "${t#t_}" "$t"
done
echo "release tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
