"""Start bangerd in the background when nothing answers (no system service).

The daemon is started detached (own session, stdin from /dev/null, output
appended to the daemon log) as ``python -m banger.daemon.main`` with the same
interpreter and environment as the CLI, so ``BANGER_HOME`` and
``BANGER_ALLOW_ROOT`` carry over. Readiness is a real ``GET /v1/version``,
retried with backoff for at most :data:`READY_TIMEOUT` seconds — the one
bounded retry loop in banger, because a fresh process gives nothing to wait
on. If the child exits first we stop waiting at once and show why.

This is not :mod:`banger.proc`: that runs commands to completion, and this
child must outlive us.

``BANGER_NO_AUTOSTART=1`` turns this off (tests, scripts that want a clear
"daemon unavailable" instead).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

from banger.errors import DaemonUnavailable, stderr_tail
from banger.paths import Paths, SystemInstall, system_install

NO_AUTOSTART_ENV = "BANGER_NO_AUTOSTART"
READY_TIMEOUT = 10.0
#: bangerd's exit status when another daemon holds the socket (a concurrent auto-start).
_ALREADY_RUNNING = 4


def daemon_argv() -> list[str]:
    return [sys.executable, "-m", "banger.daemon.main"]


def ensure_daemon(paths: Paths, unreachable: DaemonUnavailable) -> None:
    """Start the daemon and wait until it answers, or raise DaemonUnavailable."""
    if os.environ.get(NO_AUTOSTART_ENV) == "1":
        raise DaemonUnavailable(
            unreachable.message, hint=f"auto-start is off ({NO_AUTOSTART_ENV}=1); run `bangerd`"
        ) from unreachable
    installed = system_install()
    if installed is not None:
        raise installed_not_answering(installed) from unreachable
    start_daemon(paths)


def installed_not_answering(installed: SystemInstall) -> DaemonUnavailable:
    """The system services own the daemon: say where to look instead of starting one."""
    if not installed.serves_me:
        return DaemonUnavailable(
            f"banger is installed as a system service for {installed.owner}, not for uid "
            f"{os.getuid()} ({installed.metadata})",
            hint=f"run banger as {installed.owner}, or reinstall: "
            "sudo banger system install --owner $USER",
        )
    return DaemonUnavailable(
        "bangerd.service is installed but not answering: `systemctl status bangerd`",
        hint="`banger system status` checks the whole install; "
        "`sudo banger system restart` restarts both services",
    )


def start_daemon(paths: Paths, *, timeout: float = READY_TIMEOUT) -> None:
    if sys.stderr.isatty():
        # A person at a terminal sees at once why the first command waits (the
        # daemon reconciles what a crash left before it answers); scripts,
        # whose stderr is not a terminal, get no extra line.
        print(f"starting bangerd (log: {paths.daemon_log})…", file=sys.stderr, flush=True)
    paths.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        log_start = os.fstat(log_fd).st_size
        child = subprocess.Popen(
            daemon_argv(),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)
    try:
        _wait_ready(paths, child, log_start, timeout)
    finally:
        if child.returncode is None:
            # It is meant to outlive us: no ResourceWarning about a running child.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del child


def _wait_ready(
    paths: Paths, child: subprocess.Popen[bytes], log_start: int, timeout: float
) -> None:
    from banger.client import BangerClient, DaemonNotReachable

    deadline = time.monotonic() + timeout
    delay = 0.02
    exited: int | None = None
    progress = StartupProgress(paths.daemon_log, log_start) if sys.stderr.isatty() else None
    with BangerClient(paths) as client:
        while True:
            try:
                client.version()
            except DaemonNotReachable:
                pass
            else:
                if progress is not None:
                    progress.show()  # the steps logged since the last look
                return
            if progress is not None:
                progress.show()
            if exited is None:
                exited = child.poll()
                if exited is not None and exited != _ALREADY_RUNNING:
                    _fail(paths, f"bangerd exited with status {exited} while starting", log_start)
            if time.monotonic() >= deadline:
                _fail(paths, f"bangerd did not answer within {timeout:g}s", log_start)
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


class StartupProgress:
    """What a starting bangerd says it is doing (its ``startup:`` log
    lines): a person at a terminal sees reconciliation happen, not a silent wait."""

    MARK = " startup: "

    def __init__(self, log: Path, offset: int) -> None:
        self.log = log
        self.offset = offset
        self.partial = b""

    def show(self) -> None:
        for step in self.new_steps():
            print(f"  {step}…", file=sys.stderr, flush=True)

    def new_steps(self) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read(64 * 1024)
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        steps = []
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            if self.MARK in line:
                steps.append(line.split(self.MARK, 1)[1].strip())
        return steps


def _fail(paths: Paths, what: str, log_start: int) -> None:
    tail = stderr_tail(_read_from(paths.daemon_log, log_start), lines=3)
    message = f"{what}; log {paths.daemon_log}" + (f": {tail}" if tail else "")
    raise DaemonUnavailable(message, hint=f"see {paths.daemon_log} for the whole story")


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(64 * 1024).decode("utf-8", "replace")
    except OSError:
        return ""
