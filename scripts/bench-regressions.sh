#!/usr/bin/env bash
# Reads criterion's comparison output and fails when a benchmark got slower than the
# tolerance (percent) with statistical significance ("Performance has regressed").
#
# Usage: scripts/bench-regressions.sh CRITERION_LOG TOLERANCE_PERCENT
set -euo pipefail
log="${1:?criterion output}" tolerance="${2:-10}"
python3 - "$log" "$tolerance" <<'PY'
import re, sys
# Criterion prints minus signs as U+2212; older versions put the change on the "change:" line,
# newer ones on the "time:" line that follows it.
log = open(sys.argv[1], encoding="utf-8").read().replace("\u2212", "-")
tolerance = float(sys.argv[2])
interval = re.compile(r"\[([+-]?[\d.]+)% ([+-]?[\d.]+)% ([+-]?[\d.]+)%\]")
name, failed, seen, after_change = None, [], 0, False
for line in log.splitlines():
    if line and not line.startswith(" ") and "time:" in line:
        name = line.split("time:")[0].strip() or name
    if re.fullmatch(r"\s*change:\s*", line):
        after_change = True
        continue
    m = interval.search(line)
    if m and ("change:" in line or (after_change and "time:" in line)):
        seen += 1
        change = float(m.group(2))  # the estimate, between the interval bounds
        if change > tolerance:
            failed.append(f"{name}: {change:+.2f}% (tolerance {tolerance}%)")
    if "time:" in line or "change:" in line:
        after_change = False
if not seen:
    sys.exit("error: no comparison found; save a baseline first with `make bench`")
for f in failed:
    print("regression:", f)
print(f"{seen} benchmarks compared, {len(failed)} regressed beyond {tolerance}%")
sys.exit(1 if failed else 0)
PY
