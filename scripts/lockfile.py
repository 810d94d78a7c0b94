#!/usr/bin/env python3
"""Keep requirements.lock in step with pyproject.toml (stdlib only).

`make lock` writes the lock with `uv pip compile --generate-hashes` and then
calls `lockfile.py stamp`, which records a digest of the inputs the lock was
made from (the dependency ranges in pyproject.toml, requires-python, the
build-system requirements and scripts/lock-tools.in) in the lock's first line.
`lockfile.py check` recomputes it; `make deps` and `make test` refuse to go on
with a lock made from other inputs, with one line saying how to refresh it.

Also checked: the lock names no index or download URL (no registry host names
in the repository) and every entry carries hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
TOOLS = ROOT / "scripts" / "lock-tools.in"
LOCK = ROOT / "requirements.lock"
STAMP_PREFIX = "# inputs-sha256: "
REFRESH = "run `make lock`, then the full suite (`make test`)"


def inputs_digest() -> str:
    with PYPROJECT.open("rb") as f:
        data = tomllib.load(f)
    project = data.get("project", {})
    tools = [
        line.split("#", 1)[0].strip()
        for line in TOOLS.read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            k: sorted(v) for k, v in sorted(project.get("optional-dependencies", {}).items())
        },
        "build-system": sorted(data.get("build-system", {}).get("requires", [])),
        "tools": sorted(tools),
    }
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def problems(text: str) -> list[str]:
    found: list[str] = []
    lines = text.splitlines()
    if not lines or not lines[0].startswith(STAMP_PREFIX):
        found.append("it has no inputs stamp")
    elif lines[0][len(STAMP_PREFIX) :].strip() != inputs_digest():
        found.append("pyproject.toml or scripts/lock-tools.in changed since it was made")
    if re.search(r"(?i)(https?|file)://|--(extra-)?index-url|--find-links", text):
        found.append("it names an index or download URL")
    # Each requirement is `name==version \` followed by its hash lines.
    entries = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+(.*?)(?=^\S|\Z)", text, re.M | re.S)
    if not entries:
        found.append("it pins nothing")
    for name, rest in entries:
        if "--hash=sha256:" not in rest:
            found.append(f"{name} has no hash")
    return found


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "check"
    if cmd == "stamp":
        body = LOCK.read_text()
        if body.startswith(STAMP_PREFIX):
            body = body.split("\n", 1)[1]
        LOCK.write_text(f"{STAMP_PREFIX}{inputs_digest()}\n{body}")
        return 0
    if cmd != "check":
        print(f"usage: {argv[0]} check|stamp", file=sys.stderr)
        return 2
    if not LOCK.exists():
        print(f"requirements.lock is missing: {REFRESH}", file=sys.stderr)
        return 1
    found = problems(LOCK.read_text())
    if found:
        print(f"requirements.lock is stale ({'; '.join(found)}): {REFRESH}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
