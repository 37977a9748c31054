#!/usr/bin/env python3
"""Prints -1, 0 or 1 as semver version A is lower than, equal to or greater than B.

Pre-releases sort before their release (1.0.0-rc.1 < 1.0.0); alpha < beta < rc.
Usage: scripts/semver-compare.py A B
"""
import re
import sys

PATTERN = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.(\d+))?$")
RANK = {"alpha": 0, "beta": 1, "rc": 2, None: 3}


def key(text):
    m = PATTERN.match(text)
    if not m:
        sys.exit(f"error: not a version: {text}")
    major, minor, patch, pre, n = m.groups()
    return (int(major), int(minor), int(patch), RANK[pre], int(n or 0))


a, b = key(sys.argv[1]), key(sys.argv[2])
print((a > b) - (a < b))
