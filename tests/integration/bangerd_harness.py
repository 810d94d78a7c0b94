"""Run a real ``bangerd`` in a throwaway BANGER_HOME (shared by the daemon and CLI tests)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from banger.client import BangerClient, DaemonNotReachable
from banger.paths import Paths
from tests.support import VENV_BIN, wait_until

BANGER = VENV_BIN / "banger"
BANGERD = VENV_BIN / "bangerd"


def home_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a banger process using ``home``; never auto-starts unless asked."""
    env = dict(os.environ)
    env.pop("BANGER_RUNTIME_DIR", None)
    env.pop("BANGER_ALLOW_ROOT", None)
    env["BANGER_HOME"] = str(home)
    env["BANGER_NO_AUTOSTART"] = "1"
    env.update(extra)
    return env


def home_paths(home: Path) -> Paths:
    return Paths.from_env({"BANGER_HOME": str(home)})


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    home: Path
    output: Path

    @property
    def paths(self) -> Paths:
        return home_paths(self.home)

    def client(self) -> BangerClient:
        return BangerClient(self.paths)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def log(self) -> str:
        return self.paths.daemon_log.read_text() if self.paths.daemon_log.exists() else ""

    def stderr(self) -> str:
        return self.output.read_text()


def spawn_daemon(home: Path, *args: str, env: dict[str, str] | None = None) -> Daemon:
    output = home / f"bangerd-{time.monotonic_ns()}.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [str(BANGERD), *args],
            env=env if env is not None else home_env(home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    return Daemon(proc, home, output)


def wait_ready(daemon: Daemon, timeout: float = 60) -> None:
    """Wait until bangerd answers (a fresh process gives us nothing else to wait on).

    ``timeout`` is a hang bound; a daemon that exits instead fails at once.
    """
    with daemon.client() as client:

        def answers() -> bool:
            try:
                client.version()
            except DaemonNotReachable:
                if daemon.proc.poll() is not None:
                    raise AssertionError(
                        f"bangerd exited {daemon.proc.returncode}: {daemon.stderr()}"
                    ) from None
                return False
            return True

        wait_until(answers, timeout, "bangerd answering on its socket")


@contextmanager
def running_daemon(home: Path, *args: str) -> Iterator[Daemon]:
    daemon = spawn_daemon(home, "--allow-root", *args)
    try:
        wait_ready(daemon)
        yield daemon
    finally:
        if daemon.proc.poll() is None:
            daemon.signal(signal.SIGTERM)
            try:
                daemon.wait(20)
            except subprocess.TimeoutExpired:
                daemon.proc.kill()
                daemon.wait()


def wait_pid_exit(pid: int, timeout: float = 20) -> bool:
    """Wait for a process that is not our child (pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def run_cli(
    home: Path, *args: str, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BANGER), *args],
        env=home_env(home, **extra_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
