"""``banger pool`` and ``vm create|run --pool`` against a real bangerd (issue #18 item 4).

No guest boots here: the flag refusals happen before any request, and the
pool commands use size 0, which makes no template and no guests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.bangerd_harness import Daemon, run_cli, running_daemon
from tests.support import assert_one_line_error, short_tmpdir


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def home(daemon: Daemon) -> Path:
    return daemon.home


def _op_kinds(home: Path) -> list[str]:
    ops = json.loads(run_cli(home, "--json", "ops", "list", "--all").stdout)
    return [op["kind"] for op in ops if op["kind"].startswith(("vm.", "pool."))]


#: Each flag --pool refuses, with a value (the pool's guests are made and running).
SHAPE_FLAGS = [
    ["--image", "debian-bookworm"],
    ["--kernel", "debian"],
    ["--cpus", "2"],
    ["--memory", "1G"],
    ["--init", "fast"],
    ["--disk-size", "4G"],
]


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        *[(["vm", "create", "a1"], f) for f in SHAPE_FLAGS],
        (["vm", "create", "a1"], ["--from-snapshot", "snap"]),
        (["vm", "create", "a1"], ["--no-start"]),
        *[(["vm", "run", "--rm"], f) for f in SHAPE_FLAGS],
    ],
)
def test_pool_refuses_the_flags_its_guests_fix(
    home: Path, command: list[str], flag: list[str]
) -> None:
    argv = [*command, "--pool", "p", *flag]
    if command[1] == "run":
        argv += ["--", "true"]
    result = run_cli(home, *argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith(f"error: --pool and {flag[0]} cannot be used together: ")
    assert result.stdout == ""
    # Refused before any request: nothing was created, no VM operation started.
    assert json.loads(run_cli(home, "--json", "vm", "list").stdout) == []
    assert _op_kinds(home) == []


def test_pool_set_checks_its_flags_before_asking(home: Path) -> None:
    memory = run_cli(home, "pool", "set", "p", "--memory", "lots")
    assert memory.returncode == 2
    assert_one_line_error(memory.stderr)
    assert memory.stderr.startswith("error: memory: ")
    size = run_cli(home, "pool", "set", "p", "--size", "17")
    assert size.returncode == 2
    assert "--size" in size.stderr and "Traceback" not in size.stderr
    assert _op_kinds(home) == []
