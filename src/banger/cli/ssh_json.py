"""``--json`` for the commands that run a guest command over SSH (``vm ssh``, ``vm run``).

The command's output is captured instead of streamed and printed as one JSON
object with its exit status; the CLI exits with that status too, as without
``--json``. A shell (no COMMAND) has nothing to report: refused as bad input.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Any

from banger.cli.output import print_json
from banger.errors import InvalidArgument


def require_command(command: Sequence[str], what: str) -> None:
    if not command:
        raise InvalidArgument(
            f"--json: {what} needs a COMMAND (after --) to report on",
            hint=f"banger {what} NAME --json -- CMD…; an interactive shell has no JSON",
        )


def run_json(argv: list[str], command: Sequence[str], **extra: Any) -> int:
    """Run ``argv`` (ssh, no terminal) capturing its output; print it as JSON; its status."""
    done = subprocess.run(argv, capture_output=True, check=False)
    print_json(
        {
            **extra,
            "command": list(command),
            "exit_status": done.returncode,
            "stdout": done.stdout.decode("utf-8", "replace"),
            "stderr": done.stderr.decode("utf-8", "replace"),
        }
    )
    return done.returncode
