"""The real CLI starting banger-helper (and bangerd) on first use, with nothing installed.

Each test runs the console script inside a network namespace it creates (the
helper is root and could be asked for a bridge: it must not land in the host
namespace), with a throwaway ``BANGER_HOME``, and stops every process it
caused. ``vm start`` of a VM that does not exist is the probe: it is one of
the commands that need the helper, and it creates nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from banger.helper_start import helper_argv, needs_helper
from banger.paths import Paths
from banger.system.probes import probe_helper
from tests.integration.bangerd_harness import BANGER, home_env, home_paths, wait_pid_exit
from tests.support import Netns, User, needs_root, netns, short_tmpdir, throwaway_user


def stop(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    assert wait_pid_exit(pid), f"pid {pid} did not stop"


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns("bha") as n:
        yield n


def test_only_booting_and_building_commands_need_the_helper() -> None:
    for path in (["vm", "run", "--rm"], ["vm", "create"], ["vm", "start", "x"], ["image", "build"],
                 ["system", "cleanup-network"], ["pool", "set", "p"]):  # fmt: skip
        assert needs_helper(path), path
    for path in (["vm", "list"], ["vm", "show", "x"], ["image", "list"], ["doctor"],
                 ["system", "status"], ["pool", "list"], []):  # fmt: skip
        assert not needs_helper(path), path


def test_helper_argv_serves_this_owner_inside_its_state_dir() -> None:
    paths = Paths.from_env({"BANGER_HOME": "/tmp/bh"})
    argv = helper_argv(paths, 1234, ["banger-helper"])
    assert argv == [
        "banger-helper",
        "--socket", "/tmp/bh/run/helper.sock",
        "--owner-uid", "1234",
        "--allow-root", "/tmp/bh/state",
        "--log", "/tmp/bh/state/helper.log",
    ]  # fmt: skip


def test_doctor_warns_for_a_stale_helper_socket_the_cli_would_replace(banger_home: Path) -> None:
    from banger.doctor.checks import check_helper, run_checks

    paths = Paths.from_env()
    paths.runtime_dir.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(paths.helper_socket))
    [result] = run_checks(paths, checks=(check_helper,))
    assert result.status == "warn", result
    assert "stale" in result.detail and "starts it on first use" in result.fix


@pytest.mark.root
@needs_root
def test_first_vm_command_as_root_starts_helper_and_daemon(ns: Netns) -> None:
    with short_tmpdir() as home:
        paths = home_paths(home)
        # A stale socket from a helper that died: replaced, not mistaken for a live one.
        paths.runtime_dir.mkdir(parents=True, mode=0o700)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
            stale.bind(str(paths.helper_socket))
        env = home_env(home, BANGER_NO_AUTOSTART="0", BANGER_ALLOW_ROOT="1")
        started: list[int] = []
        try:
            result = subprocess.run(
                ns.argv(str(BANGER), "vm", "start", "nosuch"),
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            with suppress(OSError, ValueError):
                started.append(int(paths.helper_pidfile.read_text()))
            with suppress(OSError, ValueError):
                started.append(int(paths.daemon_pidfile.read_text()))
            assert result.returncode == 3, result.stderr  # NotFound, from the daemon
            assert "no VM" in result.stderr or "nosuch" in result.stderr, result.stderr
            assert f"started banger-helper as root (pid {started[0]}, " in result.stderr
            assert len(started) == 2, started
            # The recorded pid is the serving helper itself (what `kill` must reach).
            assert str(paths.helper_socket) in cmdline(started[0])

            doctor = subprocess.run(
                ns.argv(str(BANGER), "doctor", "--json"),
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            checks = {c["name"]: c for c in json.loads(doctor.stdout)}
            assert checks["helper"]["status"] == "pass", checks["helper"]
            assert checks["daemon"]["status"] == "pass", checks["daemon"]
            assert "helper ready" in paths.helper_log.read_text()

            # The next command finds both running and starts nothing.
            again = subprocess.run(
                ns.argv(str(BANGER), "vm", "start", "nosuch"),
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert again.returncode == 3
            assert "started banger-helper" not in again.stderr
            assert int(paths.helper_pidfile.read_text()) == started[0]
        finally:
            for pid in started:
                stop(pid)
        # Stopping the recorded pids stopped them: nothing answers any more.
        assert not probe_helper(paths.helper_socket).up


@pytest.fixture
def owner() -> Iterator[User]:
    with throwaway_user("bha") as user:
        yield user


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("sudo", ["needs a password", "is not installed"])
def test_without_root_or_sudo_the_error_names_the_command(
    ns: Netns, owner: User, sudo: str
) -> None:
    """The message says which of the two it is (issue #22 item 2): sudo is installed
    (scripts/test-packages.txt) and the owner has no rule in sudoers, or the PATH
    finds no sudo at all. And the command it prints works as printed."""
    if sudo == "needs a password":
        assert shutil.which("sudo"), "sudo is in scripts/test-packages.txt"
        path = os.environ["PATH"]
    else:
        path = str(BANGER.parent)  # the venv alone: no sudo on it
    with short_tmpdir() as home:
        os.chown(home, owner.uid, owner.gid)
        env = home_env(home, BANGER_NO_AUTOSTART="0", HOME=str(owner.home), PATH=path)
        argv = ns.argv(
            shutil.which("setpriv") or "setpriv", f"--reuid={owner.uid}", f"--regid={owner.gid}",
            "--init-groups",
            str(BANGER), "vm", "run", "--rm", "--", "true",
        )  # fmt: skip
        # ip and setpriv found with our PATH (the owner's may lack their directory).
        argv[0] = shutil.which(argv[0]) or argv[0]
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        paths = home_paths(home)
        try:
            lines = result.stderr.splitlines()
            assert result.returncode == 6, result.stderr  # HelperError
            assert lines[0] == (
                f"error: the root helper is not running (no answer on {paths.helper_socket}) "
                f"and sudo {sudo}"
            ), result.stderr
            expected = " ".join(helper_argv(paths, owner.uid)[1:])
            assert lines[1].startswith("hint: start it yourself: sudo "), lines[1]
            assert expected in lines[1]
            assert "sudo banger system install" in lines[1]
            assert len(lines) == 2
            # It stopped before anything else: no daemon was started either.
            assert not paths.daemon_socket.exists()
            # The directories the printed command needs exist, the owner's, 0700 ...
            for d in (paths.runtime_dir, paths.state_dir):
                st = d.stat()
                assert (st.st_uid, st.st_mode & 0o777) == (owner.uid, 0o700), d
            # ... and the command works as printed (what the user runs with sudo).
            printed = lines[1].removeprefix("hint: start it yourself: sudo ")
            printed = re.split(r"\s+\(or install", printed)[0]
            started = subprocess.run(
                ns.argv(*shlex.split(printed)), capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
            assert probe_helper(paths.helper_socket).up
            stop(int(started.stdout.strip().splitlines()[-1]))
        finally:
            pidfile = paths.runtime_dir / "bangerd.pid"
            if pidfile.exists():
                stop(int(pidfile.read_text()))
