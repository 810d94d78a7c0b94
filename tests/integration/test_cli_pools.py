"""``banger pool`` and ``vm create|run --pool`` against a real bangerd (issue #18 item 4).

No guest boots here: the flag refusals happen before any request, and the
pool commands use size 0, which makes no template and no guests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.bangerd_harness import Daemon, home_env, run_cli, running_daemon
from tests.support import assert_one_line_error, short_tmpdir, wait_until


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def home(daemon: Daemon) -> Path:
    return daemon.home


def _op_ids(home: Path) -> set[str]:
    return {op["id"] for op in json.loads(run_cli(home, "--json", "ops", "list", "--all").stdout)}


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
    ops_before = _op_ids(home)
    result = run_cli(home, *argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith(f"error: --pool and {flag[0]} cannot be used together: ")
    assert result.stdout == ""
    # Refused before any request: nothing was created, no operation started.
    assert json.loads(run_cli(home, "--json", "vm", "list").stdout) == []
    assert _op_ids(home) == ops_before


def test_pool_set_refuses_a_bad_memory_or_size(home: Path) -> None:
    ops_before = _op_ids(home)
    memory = run_cli(home, "pool", "set", "p", "--memory", "lots")
    assert memory.returncode == 2
    assert_one_line_error(memory.stderr)
    assert memory.stderr.startswith("error: memory: ")
    size = run_cli(home, "pool", "set", "p", "--size", "17")
    assert size.returncode == 2
    assert_one_line_error(size.stderr)
    assert size.stderr.startswith("error: size: must be 0-16, got 17")
    assert _pools(home) == []
    assert _op_ids(home) == ops_before


POOL_COLUMNS = ["NAME", "IMAGE", "CPUS", "MEMORY", "INIT", "READY", "STATE"]


def _pools(home: Path) -> list[dict[str, Any]]:
    result = run_cli(home, "pool", "list", "--json")
    assert result.returncode == 0, result.stderr
    pools = json.loads(result.stdout)
    assert isinstance(pools, list)
    return pools


def test_pool_set_list_show_rm_of_an_empty_pool(home: Path) -> None:
    """Size 0: the pool is recorded and shown, but no template or guest is made."""
    empty = run_cli(home, "pool", "list")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.split() == POOL_COLUMNS

    made = run_cli(home, "pool", "set", "p0", "--size", "0", "--cpus", "1", "--memory", "256",
                   "--init", "fast", "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    wanted = {"name": "p0", "size": 0, "vcpus": 1, "memory_mib": 256, "init": "fast",
              "state": "empty", "ready": [], "template": None, "error": None}  # fmt: skip
    assert {k: info[k] for k in wanted} == wanted

    # Absent flags keep their value; --memory takes a size as vm create's does.
    changed = run_cli(home, "pool", "set", "p0", "--memory", "1G")
    assert changed.returncode == 0, changed.stderr
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in changed.stdout.splitlines())}
    wanted = {"name": "p0", "cpus": "1", "memory": "1024 MiB", "init": "fast", "ready": "0/0",
              "state": "empty", "template": "-", "guests": "-"}  # fmt: skip
    assert {k: fields[k] for k in wanted} == wanted

    table = run_cli(home, "pool", "list").stdout.splitlines()
    assert table[0].split() == POOL_COLUMNS
    assert len(table) == 2
    assert table[1].split() == ["p0", info["image"], "1", "1024M", "fast", "0/0", "empty"]
    listed = _pools(home)
    shown = json.loads(run_cli(home, "pool", "show", "p0", "--json").stdout)
    assert listed == [shown]
    assert shown["memory_mib"] == 1024 and shown["created_at"] == info["created_at"]

    removed = run_cli(home, "pool", "rm", "p0")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == "pool p0: removed\n"
    assert "▸ remove" in removed.stderr  # the operation's stages, as vm rm shows them
    assert _pools(home) == []
    ops = json.loads(run_cli(home, "--json", "ops", "list", "--all").stdout)
    assert [(op["kind"], op["target"], op["state"]) for op in ops if op["kind"] == "pool.rm"] == [
        ("pool.rm", "p0", "succeeded")
    ]


@pytest.mark.parametrize(
    "argv",
    [["pool", "show", "nope"], ["pool", "rm", "nope"], ["pool", "show", "nope", "--json"]],
)
def test_an_unknown_pool_is_a_one_line_not_found(home: Path, argv: list[str]) -> None:
    result = run_cli(home, *argv)
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith("error: no pool named 'nope'")
    assert result.stdout == ""


def test_vm_create_from_an_unknown_pool_is_not_found_and_keeps_workspace(
    home: Path, short_tmp: Path
) -> None:
    """--workspace goes with --pool (copied over SSH onto the taken guest): the CLI lets
    it through, and the daemon's answer is about the pool."""
    repo = short_tmp / "repo"
    repo.mkdir()
    result = run_cli(home, "vm", "create", "a2", "--pool", "nope", "--workspace", str(repo))
    assert result.returncode == 3, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stderr.startswith("error: pool: no pool named 'nope'")
    assert json.loads(run_cli(home, "--json", "vm", "list").stdout) == []


@pytest.mark.parametrize(
    ("argv", "start", "hint"),
    [
        (["Bad_Name", "--size", "0"], "error: name: 'Bad_Name' is not a DNS label", True),
        (["p2", "--size", "0", "--cpus", "0"], "error: cpus: must be at least 1", False),
    ],
)
def test_pool_set_bad_input_from_the_daemon_exits_2(
    home: Path, argv: list[str], start: str, hint: bool
) -> None:
    result = run_cli(home, "pool", "set", *argv)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result.stderr, hint=hint)
    assert result.stderr.startswith(start)
    assert _pools(home) == []


def test_a_failed_fill_shows_its_error(home: Path) -> None:
    """This home has no root helper, so a pool of size 1 fails its first fill at once
    (nothing boots); list shows the error in STATE, show and --json in error."""
    made = run_cli(home, "pool", "set", "pf", "--size", "1", "--init", "fast", "--memory", "256")
    assert made.returncode == 0, made.stderr
    try:
        failed = wait_until(
            lambda: [p for p in _pools(home) if p["state"] == "failed"],
            120,
            "pool pf's fill failing for want of the helper",
        )[0]
        assert failed["name"] == "pf" and failed["ready"] == []
        assert "helper" in failed["error"]
        row = run_cli(home, "pool", "list").stdout.splitlines()[1]
        assert row.split()[:7] == ["pf", failed["image"], "2", "256M", "fast", "0/1", "failed:"]
        assert row.endswith(f"failed: {failed['error']}")
        shown = run_cli(home, "pool", "show", "pf").stdout.splitlines()
        assert f"error:    {failed['error']}" in shown and "state:    failed" in shown
    finally:
        assert run_cli(home, "pool", "rm", "pf").returncode == 0
    assert _pools(home) == []


#: Runs the CLI in-process, then reports its exit status and whether asyncssh was loaded.
_PROBE = """
import json, sys
from banger.cli.main import main
sys.argv = ["banger", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "asyncssh": "asyncssh" in sys.modules}), file=sys.stderr)
"""


def test_vm_run_with_a_command_does_not_load_asyncssh(home: Path) -> None:
    """`vm run [--pool P] -- CMD` runs CMD over the exec API: the CLI has no use for
    asyncssh, whose import was ~0.15 s of a warm `vm run --pool --rm -- true`."""
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, "vm", "run", "--pool", "nope", "--rm", "--no-workspace",
         "--", "true"],
        env=home_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    report = json.loads(probe.stderr.strip().splitlines()[-1])
    assert report == {"code": 3, "asyncssh": False}, probe.stderr
    assert "error: pool: no pool named 'nope'" in probe.stderr
