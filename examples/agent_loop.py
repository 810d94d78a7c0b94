#!/usr/bin/env python3
"""An agent loop on banger's Python SDK: sandbox a repository, fix it, bring the fix back.

    python examples/agent_loop.py [--repo DIR] [--name NAME] [--image IMAGE] [--init fast]

1. creates a VM with the repository copied in (a small demo repository is
   made at DIR first when DIR holds none: a shell script with a bug and its test);
2. runs the tests in the VM (they fail: the bug);
3. writes the fix into the guest copy and runs the tests again (they pass);
4. exports the guest's work as the host branch ``banger/<name>``;
5. deletes the VM, whatever happened before.

The "agent" here is a fixed edit, so the example runs unattended (the test
suite runs it: tests/e2e/test_sdk_e2e.py); a real one would read ``r.stdout``
and decide. Needs what ``banger vm create`` needs (a default image and kernel;
bangerd is started on first use). The guest image needs only ``sh`` and ``git``,
both in banger's default Debian image.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from banger.errors import BangerError
from banger.sdk import Banger

BUGGY = 'greet() { echo "hello, $1" ; }\n'  # the spec says "Hello, NAME!"
FIXED = 'greet() { echo "Hello, $1!" ; }\n'
TEST = """\
#!/bin/sh
# The repository's test suite: exits non-zero when greet is wrong.
. ./greet.sh
got=$(greet world)
if [ "$got" = "Hello, world!" ]; then echo "ok: $got"; else echo "FAIL: got '$got'" >&2; exit 1; fi
"""


def make_demo_repo(repo: Path) -> None:
    """A two-file git repository with a failing test (argv only, no shell)."""
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "greet.sh").write_text(BUGGY)
    (repo / "test.sh").write_text(TEST)
    (repo / "test.sh").chmod(0o755)
    ident = ["-c", "user.name=Agent Demo", "-c", "user.email=agent@example.invalid"]
    for argv in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "greet.sh", "test.sh"],
        ["git", *ident, "commit", "-q", "-m", "greet, with a bug"],
    ):
        subprocess.run(argv, cwd=repo, check=True)


def step(text: str) -> None:
    print(f"[agent] {text}", flush=True)


def agent_loop(repo: Path, name: str, image: str | None, init: str | None) -> int:
    started = time.monotonic()
    with Banger() as bg:
        step(f"creating VM {name} with {repo} copied in")
        vm = bg.create(name, image=image, init=init, workspace=repo)
        branch = f"banger/{name}"
        try:
            guest_repo = f"/root/{repo.name}"  # workspace prepare's default destination
            step("running the tests")
            r = vm.run(["sh", "test.sh"], cwd=guest_repo, timeout=120)
            step(f"tests exited {r.exit_code}: {(r.stdout + r.stderr).strip()}")
            if r.exit_code == 0:
                step("nothing to fix")
            else:
                step("writing the fix to greet.sh")
                vm.files.write(f"{guest_repo}/greet.sh", FIXED)
                r = vm.run(f"cd {shlex.quote(guest_repo)} && sh test.sh", timeout=120)
                step(f"tests exited {r.exit_code}: {(r.stdout + r.stderr).strip()}")
                if r.exit_code != 0:
                    return 1
            result = vm.workspace.export(branch=branch, force=True)
            step(f"exported the work as branch {branch} (commit {result.get('commit')})")
        finally:
            step(f"deleting VM {name}")
            vm.delete(force=True)
    step(f"done in {time.monotonic() - started:.0f}s; see: git -C {repo} show {branch}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repo",
        type=Path,
        default=Path("banger-agent-demo"),
        help="a git repository (a demo one is made here if there is none)",
    )
    parser.add_argument("--name", default="agent-demo", help="the VM's name")
    parser.add_argument("--image", help="image name or id (default: the default image)")
    parser.add_argument("--init", choices=["systemd", "fast"], help="guest init mode")
    args = parser.parse_args()
    repo = args.repo.resolve()
    if not (repo / ".git").exists():
        step(f"making a demo repository at {repo}")
        make_demo_repo(repo)
    try:
        return agent_loop(repo, args.name, args.image, args.init)
    except BangerError as exc:
        hint = f"\nhint: {exc.hint}" if exc.hint else ""
        print(f"error: {exc.message}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
