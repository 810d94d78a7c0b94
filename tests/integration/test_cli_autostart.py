"""The real `banger` console script starting bangerd on first use."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.client import BangerClient
from tests.integration.bangerd_harness import home_paths, run_cli, wait_pid_exit
from tests.support import IS_ROOT, short_tmpdir


@pytest.fixture
def home() -> Iterator[Path]:
    with short_tmpdir() as path:
        try:
            yield path
        finally:
            pidfile = home_paths(path).runtime_dir / "bangerd.pid"
            if pidfile.exists():
                pid = int(pidfile.read_text())
                os.kill(pid, signal.SIGTERM)
                assert wait_pid_exit(pid), f"auto-started bangerd {pid} did not stop"


def test_first_command_starts_the_daemon(home: Path) -> None:
    paths = home_paths(home)
    assert not paths.daemon_socket.exists()
    result = run_cli(home, "vm", "list", "--json", BANGER_NO_AUTOSTART="0", BANGER_ALLOW_ROOT="1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    with BangerClient(paths) as client:
        info = client.version()
    assert (paths.runtime_dir / "bangerd.pid").read_text().strip() == str(info.pid)
    assert info.pid != os.getpid()
    assert "bangerd ready" in paths.daemon_log.read_text()
    # The next command reuses it.
    again = run_cli(home, "--json", "version", BANGER_NO_AUTOSTART="0", BANGER_ALLOW_ROOT="1")
    assert json.loads(again.stdout)["daemon"]["pid"] == info.pid


def test_a_person_at_a_terminal_is_told_the_daemon_is_starting(home: Path) -> None:
    """Issue #21 item 14: a line at once when stderr is a terminal (none for scripts,
    as the test above shows: its stderr is a pipe and stays empty)."""
    import pty
    import subprocess

    from tests.integration.bangerd_harness import BANGER, home_env

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(BANGER), "vm", "list", "--json"],
            env=home_env(home, BANGER_NO_AUTOSTART="0", BANGER_ALLOW_ROOT="1"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave,
        )  # fmt: skip
        os.close(slave)
        out, _ = proc.communicate(timeout=120)
        said = b""
        with contextlib.suppress(OSError):  # EIO once the terminal's last writer is gone
            while chunk := os.read(master, 4096):
                said += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert json.loads(out) == []
    log = home_paths(home).daemon_log
    lines = said.decode().splitlines()
    assert lines[0] == f"starting bangerd (log: {log})…", said
    # ... then what it is doing while it reconciles (the rest of item 14)
    assert lines[1:4] == [
        "  reconciling interrupted operations and leftover files…",
        "  finding the host's VM support (KVM or emulation)…",
        "  reconciling VMs with their processes, taps and addresses…",
    ], said
    assert "  reconciling sessions with their guests…" in lines, said


def test_scripts_get_no_starting_line(home: Path) -> None:
    result = run_cli(home, "vm", "list", "--json", BANGER_NO_AUTOSTART="0", BANGER_ALLOW_ROOT="1")
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs the daemon's root refusal")
def test_failed_start_names_the_log_and_its_last_lines(home: Path) -> None:
    result = run_cli(home, "vm", "list", BANGER_NO_AUTOSTART="0")
    assert result.returncode == 5
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    log = home_paths(home).daemon_log
    assert lines[0].startswith("error: bangerd exited with status 2 while starting; log ")
    assert str(log) in lines[0]
    assert "refusing to run as root" in lines[0]
    assert lines[1] == f"hint: see {log} for the whole story"
    assert result.stdout == ""


def test_no_autostart_says_daemon_unavailable(home: Path) -> None:
    result = run_cli(home, "ops", "list")
    assert result.returncode == 5
    assert result.stderr.startswith("error: bangerd is not running (nothing answers on ")
    assert "hint: auto-start is off (BANGER_NO_AUTOSTART=1)" in result.stderr
    assert not home_paths(home).daemon_socket.exists()
    assert "Traceback" not in result.stderr
