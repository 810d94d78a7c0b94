"""Executables standing in for programs that cannot run here, shared by several test modules.

``firecracker``: Firecracker needs a KVM host able to run ordinary guests;
:func:`standin_binary` writes an executable named ``firecracker`` that runs
``tests/firecracker_standin.py`` (an HTTP server on the API socket, checked
against ``firecracker-api.yaml``) with the test's knobs.
"""

from __future__ import annotations

import sys
from pathlib import Path

STANDIN = Path(__file__).resolve().parent / "firecracker_standin.py"


def standin_binary(
    d: Path, *, env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> str:
    """An executable named ``firecracker`` that runs the stand-in (with test knobs)."""
    path = d / "firecracker"
    path.write_text(
        f"#!{sys.executable}\n"
        "import os, runpy, sys\n"
        f"os.environ.update({env or {}!r})\n"
        f"sys.argv = [{str(STANDIN)!r}, *sys.argv[1:], *{list(extra)!r}]\n"
        f"runpy.run_path({str(STANDIN)!r}, run_name='__main__')\n"
    )
    path.chmod(0o755)
    return str(path)
