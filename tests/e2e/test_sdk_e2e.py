"""The Python SDK against real guests (issue #17 items 5 and 7).

Two boots in one installation: ``examples/agent_loop.py`` end to end (its own
VM, created with a workspace and deleted at the end), and the SDK's surface
against one VM (:mod:`tests.e2e.sdk_surface`). Both run as programs, as the
owner inside the namespace, exactly as a user's script would: the SDK finds
bangerd through ``BANGER_HOME`` like the CLI does.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.harness import REPO, Banger
from tests.support import VENV_BIN, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

#: Boots under TCG on a loaded machine, a snapshot, and a dozen commands.
PROGRAM_TIMEOUT = 1800


def as_owner(b: Banger, *argv: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    where = ["-C", cwd] if cwd is not None else []
    result = subprocess.run(
        b.as_owner(["env", *where, f"PYTHONPATH={REPO}", *argv]),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=PROGRAM_TIMEOUT,
        check=False,
    )
    return result


def vm_names(b: Banger) -> list[str]:
    return [vm["name"] for vm in json.loads(b.banger("vm", "list", "--json").stdout)]


def test_the_agent_loop_example_end_to_end(b: Banger) -> None:
    repo = b.user.home / "demo"
    run = as_owner(
        b,
        str(VENV_BIN / "python"),
        str(REPO / "examples" / "agent_loop.py"),
        "--repo", str(repo), "--name", "agent1", "--init", "fast",
        cwd=str(b.user.home),
    )  # fmt: skip
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    out = run.stdout
    assert "tests exited 1: FAIL: got 'hello, world'" in out
    assert "tests exited 0: ok: Hello, world!" in out
    assert "exported the work as branch banger/agent1" in out
    # The fix is a branch of the host repository; its checkout is untouched.
    git = ["git", "-C", str(repo)]
    fixed = as_owner(b, *git, "show", "banger/agent1:greet.sh")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout == 'greet() { echo "Hello, $1!" ; }\n'
    assert (repo / "greet.sh").read_text() == 'greet() { echo "hello, $1" ; }\n'
    assert as_owner(b, *git, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip() == "main"
    assert "agent1" not in vm_names(b)  # deleted at the end


def test_the_sdk_surface_against_one_vm(b: Banger) -> None:
    run = as_owner(b, str(VENV_BIN / "python"), "-m", "tests.e2e.sdk_surface", "sdk1")
    assert run.returncode == 0, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(seen, indent=1))  # the whole picture when an assert below fails

    assert "sdk1" in seen["list"] and seen["get"] == "sdk1"
    assert seen["state"] == "running"

    commands = seen["commands"]
    assert commands["argv"] == [3, "out\n", "err\n"]
    assert commands["argv_literal"] == "$HOME; a|b\n"
    assert commands["shell"] == "X2\n"
    assert commands["stdin"] == "round trip"
    assert commands["env_cwd"] == "x y|/tmp\n"
    exit_code, signal, timed_out = commands["timeout"]
    assert (exit_code, timed_out) == (None, True) and signal
    assert commands["background_wait"] == [5, "bg\n"]
    assert commands["running_before_kill"] == 1  # the sleep itself, not its shell
    assert commands["kill"] == [None, "KILL", ["started"]]
    # Recorded for the report: a held connection, no handshake per command.
    print(f"SDK vm.run(['true']) median: {commands['true_median_s'] * 1000:.0f} ms")

    # Ctrl-C in a blocking run(), and leaving `with Banger()` with a command in the
    # background, leave no process in the guest (checked with ps in the program).
    interruptions = seen["interruptions"]
    assert interruptions["closed"] and interruptions["interrupted"]
    assert interruptions["child_first_line"] == "up\n"
    assert interruptions["child_status"] != 0  # KeyboardInterrupt

    files = seen["files"]
    assert files["read"] == "hi" and files["listed"]
    assert files["stat"] == ["file", len("ünïcode\n".encode()), "0o600"]
    assert files["renamed"] == "ünïcode\n"
    assert files["exists_after_remove"] is False
    assert files["missing"]["type"] == "NotFound"

    sessions = seen["sessions"]
    assert "agent" in sessions["listed"]
    assert sessions["stop"] and sessions["state"] != "running"

    assert seen["aio"] == [f"{i}\n" for i in range(8)]
    assert seen["snapshot"][0] == "ready"
    assert seen["state_after_snapshot"] == "running"
    assert seen["stopped"] == "stopped"
    assert seen["run_when_stopped"]["type"] == "Conflict"
    assert seen["get_deleted"]["type"] == "NotFound"
    assert "sdk1" not in vm_names(b)
