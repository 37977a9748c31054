#!/usr/bin/env bash
# Reads criterion's comparison output and fails when a benchmark got slower than the
# tolerance (percent) with statistical significance ("Performance has regressed").
#
# Usage: scripts/bench-regressions.sh CRITERION_LOG TOLERANCE_PERCENT
set -euo pipefail
log="${1:?criterion output}" tolerance="${2:-10}"
python3 - "$log" "$tolerance" <<'PY'
import re, sys
log, tolerance = open(sys.argv[1]).read(), float(sys.argv[2])
name, failed, seen = None, [], 0
for line in log.splitlines():
    if line and not line.startswith(" ") and "time:" in line:
        name = line.split("time:")[0].strip() or name
    elif line and not line.startswith(" "):
        name = line.strip()
    m = re.search(r"change:\s*\[([+-]?[\d.]+)% ([+-]?[\d.]+)% ([+-]?[\d.]+)%\]", line)
    if m:
        seen += 1
        change = float(m.group(2))  # the estimate, between the interval bounds
        if change > tolerance:
            failed.append(f"{name}: {change:+.2f}% (tolerance {tolerance}%)")
if not seen:
    sys.exit("error: no comparison found; save a baseline first with `make bench`")
for f in failed:
    print("regression:", f)
print(f"{seen} benchmarks compared, {len(failed)} regressed beyond {tolerance}%")
sys.exit(1 if failed else 0)
PY
