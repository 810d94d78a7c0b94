"""The one place external commands are run.

Every command goes through :func:`run` (blocking) or :func:`arun` (asyncio):
argv only, never a shell string; ``LC_ALL=C`` so output is never localised;
stdin from ``/dev/null`` unless input is given; the command logged at debug
level; and failures raised as :class:`~banger.errors.CommandError`, which tells
"not found" from a signal death from a plain non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from banger.errors import CommandError

log = logging.getLogger(__name__)

StrPath = str | Path


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


#: Where Debian and Ubuntu put system tools (e2fsck, mkfs.ext4, debugfs, nft,
#: depmod, dmsetup). An ordinary user's PATH lacks them, and banger runs as an
#: ordinary user: commands are looked up there too, whatever PATH says.
SYSTEM_DIRS: tuple[str, ...] = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def search_path(path: str | None = None) -> str:
    """``path`` (default: ours) with the :data:`SYSTEM_DIRS` it lacks appended."""
    dirs = (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep)
    return os.pathsep.join([*dirs, *(d for d in SYSTEM_DIRS if d not in dirs)])


def which(program: str) -> str | None:
    """Where :func:`run` finds ``program`` (None: not installed)."""
    return shutil.which(program, path=search_path())


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every command runs with: ours, in the C locale, with the
    system directories on PATH (the executable is looked up with it too)."""
    env = dict(os.environ)
    for key in [k for k in env if k.startswith("LC_")] + ["LANG", "LANGUAGE"]:
        env.pop(key, None)
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    env["PATH"] = search_path(env.get("PATH"))
    return env


def _argv(argv: Sequence[StrPath]) -> list[str]:
    if isinstance(argv, str | bytes):
        raise TypeError("argv must be a sequence of arguments, never a shell string")
    out = [os.fspath(a) for a in argv]
    if not out:
        raise ValueError("empty argv")
    return out


def run(
    argv: Sequence[StrPath],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: StrPath | None = None,
    capture: bool = True,
) -> Completed:
    """Run a command to completion and return its result.

    With ``check`` (the default) a non-zero exit raises :class:`CommandError`.
    ``capture=False`` lets output go to our own stdout/stderr (for commands the
    user watches); stderr is then not available for the error message.
    """
    args = _argv(argv)
    log.debug("run: %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=command_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        if cwd is not None and not Path(cwd).is_dir():
            raise
        raise CommandError(args, returncode=127, not_found=True) from exc
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(args, returncode=None, stderr=stderr, timed_out=True) from exc
    result = Completed(args, proc.returncode, proc.stdout or b"", proc.stderr or b"")
    if check and proc.returncode != 0:
        raise CommandError(args, returncode=proc.returncode, stderr=result.err)
    return result


async def arun(
    argv: Sequence[StrPath],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: StrPath | None = None,
) -> Completed:
    """The asyncio twin of :func:`run`, with the same signature and errors."""
    args = _argv(argv)
    log.debug("arun: %s", shlex.join(args))
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=command_env(env),
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        if cwd is not None and not Path(cwd).is_dir():
            raise
        raise CommandError(args, returncode=127, not_found=True) from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise CommandError(args, returncode=None, timed_out=True) from exc
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    result = Completed(args, proc.returncode, stdout, stderr)
    if check and proc.returncode != 0:
        raise CommandError(args, returncode=proc.returncode, stderr=result.err)
    return result


def run_streaming(
    argv: Sequence[StrPath],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    cwd: StrPath | None = None,
    tail_lines: int = 20,
) -> None:
    """Run a long command, passing each output line (stdout and stderr merged)
    to ``on_line`` as it arrives: for builds whose output is the progress the
    user should see. Same conventions and errors as :func:`run`; the error
    carries the last ``tail_lines`` lines of output.
    """
    args = _argv(argv)
    log.debug("run_streaming: %s", shlex.join(args))
    tail: deque[str] = deque(maxlen=tail_lines)
    try:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=command_env(env),
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        if cwd is not None and not Path(cwd).is_dir():
            raise
        raise CommandError(args, returncode=127, not_found=True) from exc
    assert child.stdout is not None
    try:
        with child.stdout:
            for raw in child.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    tail.append(line)
                    on_line(line)
    except BaseException:
        child.kill()
        child.wait()
        raise
    returncode = child.wait()
    if returncode != 0:
        raise CommandError(args, returncode=returncode, stderr="\n".join(tail))
