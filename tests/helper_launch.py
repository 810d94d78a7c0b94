"""The suite's one way to start ``banger-helper``: the production command line.

Every test that needs a real root helper starts it here, with
:func:`banger.helper_start.helper_argv` — the argv the CLI's auto-start
uses — so a flag the helper gains or renames reaches the tests at once instead
of in seven hand-written copies. ``banger-helper`` binds its socket before it
detaches and prints its pid: when :func:`start_helper` returns, the socket
already answers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from banger.helper_start import helper_argv
from banger.paths import Paths
from tests.support import VENV_BIN, Netns, stop_pid

HELPER = VENV_BIN / "banger-helper"


def helper_paths(root: Path) -> Paths:
    """A layout under ``root`` (socket ``root/run/helper.sock``, allow-root ``root/state``)."""
    paths = Paths(root / "config", root / "state", root / "cache", root / "run")
    for directory in (paths.state_dir, paths.runtime_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return paths


def helper_command_line(paths: Paths, owner_uid: int, extra: Sequence[str] = ()) -> list[str]:
    """The production argv (for a ``--foreground`` run a test watches itself)."""
    return helper_argv(paths, owner_uid, [str(HELPER)], extra)


def start_helper(
    paths: Paths,
    owner_uid: int,
    *,
    ns: Netns | None = None,
    wrap: Sequence[str] = (),
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> int:
    """Start the helper serving ``owner_uid`` for ``paths``; its pid once the socket answers.

    ``ns``: run it inside that network namespace. ``wrap``: a command prefix
    (``unshare …``, ``setpriv …``) it runs under. ``extra``: more flags
    (``--jailer …``). ``env``: added to this process's environment.
    """
    argv = [*wrap, *helper_command_line(paths, owner_uid, extra)]
    result = subprocess.run(
        ns.argv(*argv) if ns is not None else argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # a hang bound: it binds and detaches in well under a second
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise AssertionError(f"banger-helper did not start: {result.stderr}")
    return int(result.stdout.strip().splitlines()[-1])


@contextmanager
def running_helper(
    paths: Paths,
    owner_uid: int,
    *,
    ns: Netns | None = None,
    wrap: Sequence[str] = (),
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[int]:
    """:func:`start_helper`, stopped (SIGTERM, then SIGKILL after a hang bound) on exit."""
    pid = start_helper(paths, owner_uid, ns=ns, wrap=wrap, extra=extra, env=env)
    try:
        yield pid
    finally:
        stop_pid(pid)
