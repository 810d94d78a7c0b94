"""Shared test support: short temp dirs, network namespaces, throwaway users.

Everything that touches the network happens inside a namespace created here
and deleted afterwards, with no uplink: no test traffic can leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import event

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root")

T = TypeVar("T")

#: The one interpreter path: the virtualenv running the tests. Its bin holds
#: banger, bangerd and banger-helper; an unprivileged owner runs them from here too.
VENV_BIN = Path(sys.executable).parent

#: Seconds between two looks at the awaited state.
POLL = 0.05


def wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    The suite's one way to wait for an observable state (a log line, a stage, a
    file, a size) instead of sleeping and hoping. ``timeout`` is a generous upper
    bound on a hang, never a performance claim: on a loaded machine the state
    arrives late and the wait simply lasts longer. Fails with ``what`` (the
    state that never came) and the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        time.sleep(POLL)


async def async_wait_until(predicate: Callable[[], T], timeout: float, what: str) -> T:
    """:func:`wait_until` for async tests: the predicate runs in a thread."""
    return await async_wait_for(lambda: asyncio.to_thread(predicate), timeout, what)


async def async_wait_for(probe: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    """:func:`wait_until` with an async probe (a QMP query, an API call)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s")
        await asyncio.sleep(POLL)


def assert_one_line_error(stderr: str, *, hint: bool = True) -> None:
    """stderr is one ``error:`` line, then a ``hint:`` line when ``hint`` (else none).

    For CLI runs whose exit status is checked separately; a whole refusal
    (status, stdout, stderr) is :func:`assert_refusal`.
    """
    lines = stderr.splitlines()
    assert lines, "no error printed"
    assert lines[0].startswith("error: "), stderr
    if hint:
        assert len(lines) == 2, stderr
        assert lines[1].startswith("hint: "), stderr
    else:
        assert len(lines) == 1, stderr
    assert "Traceback" not in stderr


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 60.0) -> None:
    """Wait for ``pid`` to end; ``timeout`` is a hang bound, not a speed claim."""
    wait_until(lambda: not alive(pid), timeout, f"pid {pid} gone")


def stop_pid(pid: int | None, timeout: float = 60.0) -> None:
    """The suite's one way to stop a daemon it started (bangerd, banger-helper) by pid.

    SIGTERM, then SIGKILL only if it still runs after ``timeout`` (a hang bound).
    """
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_gone(pid, timeout)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, timeout)


class Branches:
    """Which branches a property test took, counted over all its examples.

    A property shaped "if the value is accepted, check X" passes vacuously when
    no example is ever accepted. :meth:`took` records a branch and reports it as
    a Hypothesis ``event()`` (shown by ``pytest --hypothesis-show-statistics``);
    :meth:`require`, called after the property ran, fails the test when a named
    branch never ran, so a check that is never reached is a failure, not a pass.
    Use it around a ``@given`` function defined inside the test and called there.
    """

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def took(self, name: str) -> None:
        self.seen[name] += 1
        event(name)

    def require(self, *names: str) -> None:
        missing = [name for name in names if not self.seen[name]]
        assert not missing, f"branches never taken: {missing}; taken: {dict(self.seen)}"


#: What the CLI prints on stderr while an operation runs: "▸ stage" and its
#: indented detail lines. A refusal found inside an operation comes after them.
PROGRESS_LINE = re.compile(r"▸ \S.*|  \S.*")


def assert_refusal(
    result: subprocess.CompletedProcess[str], status: int, says: str, *, hint: str | None = None
) -> str:
    """A CLI refusal exactly as the README's "Exit status" section promises; its error line.

    ``status`` is the documented code (2 bad input, 3 not found, 4 conflict, …:
    spell it as ``InvalidArgument.exit_code`` etc. from :mod:`banger.errors`).
    stderr ends with exactly one ``error:`` line containing ``says`` and at most
    one ``hint:`` line (containing ``hint`` when given); before them, only the
    progress of the operation that refused (``▸ stage`` and its indented
    lines): no traceback, no note, no second error. stdout is empty.
    """
    shown = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == status, f"expected exit {status}; {shown}"
    assert result.stdout == "", f"a refusal printed a result; {shown}"
    lines = result.stderr.splitlines()
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert len(errors) == 1, f"not exactly one error line; {shown}"
    before, (error, *after) = lines[: errors[0]], lines[errors[0] :]
    assert all(PROGRESS_LINE.fullmatch(line) for line in before), f"more than progress; {shown}"
    assert says in error, f"error line without {says!r}; {shown}"
    assert len(after) <= 1, f"more than one line after the error; {shown}"
    assert all(line.startswith("hint: ") for line in after), f"not a hint; {shown}"
    if hint is not None:
        assert after and hint in after[0], f"no hint with {hint!r}; {shown}"
    return error


@contextmanager
def short_tmpdir(prefix: str = "bg-") -> Iterator[Path]:
    """A temp directory with a short path (Unix socket paths must stay < 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Netns:
    name: str

    def argv(self, *argv: str) -> list[str]:
        """Prefix a command so it runs inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*argv), check=check, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )


@contextmanager
def netns(prefix: str = "bgt") -> Iterator[Netns]:
    """A fresh network namespace (loopback up, nothing else), deleted on exit."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path


@contextmanager
def throwaway_user(prefix: str = "bgu") -> Iterator[User]:
    """A new unprivileged user with its own home, removed on exit."""
    name = f"{prefix}{secrets.token_hex(3)}"
    home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/tmp"))
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(home), "--shell", "/bin/sh", name],
        check=True,
    )
    try:
        pw = pwd.getpwnam(name)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        home.chmod(0o755)
        yield User(name, pw.pw_uid, pw.pw_gid, home)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


def package_sources(package: str) -> list[tuple[str, bytes]]:
    """(label, bytes) of every file of an importable package, recursively, sorted.

    For cache keys: a rule ("all of banger.images") instead of a file list that
    goes stale when a module is added. Bytecode caches are skipped.
    """
    root = Path(str(resources.files(package)))
    return [
        (f"{package}/{path.relative_to(root)}", path.read_bytes())
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    ]
