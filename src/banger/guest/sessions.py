"""Sessions: long-running commands in a guest under tmux, over an asyncssh connection.

A session outlives the SSH connection that started it: it runs in a detached
tmux session on a private server (:data:`~banger.guest.session_scripts.TMUX_SOCKET`),
its terminal output goes to a log file in the guest whether or not anyone is
attached, and its exit status is recorded when it ends. All guest-side shell
is in :mod:`banger.guest.session_scripts`; this module runs those scripts and
turns their machine-readable output into typed values.

Attach is a direct SSH pty (:func:`attach_argv`: the system ``ssh -t`` running
``tmux attach``), executed by the CLI rather than relayed through the daemon:
ssh already does terminal modes, window size and resize (SIGWINCH becomes a
window-change request), and tmux's own detach key (``C-b d``) leaves the
session running. The daemon only hands the CLI the argv.

The daemon keeps its own records of sessions (:mod:`banger.store`) and
compares them with a :class:`GuestListing` from here
(:func:`banger.daemon.sessions_svc.reconcile`); this module never reads the
store, so the CLI's ``session attach`` can use :func:`attach_argv` without it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import shlex
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import asyncssh

from banger.errors import BangerError, Conflict, InvalidArgument, NotFound
from banger.guest import session_scripts as scripts
from banger.guest.session_scripts import DEFAULT_LAYOUT, GuestLayout, validate_name
from banger.guest.ssh import ExecResult, SSHError, remote_command, run_on

__all__ = [
    "GuestLayout",
    "GuestListing",
    "LogChunk",
    "SessionEnded",
    "SessionError",
    "SessionInfo",
    "SessionStatus",
    "StopResult",
    "attach_argv",
    "follow",
    "forget",
    "generate_name",
    "get",
    "list_sessions",
    "listing",
    "logs",
    "parse_listing",
    "send",
    "start",
    "stop",
    "validate_name",
]

#: How long a plain script (start, list, send...) may take in the guest.
SCRIPT_TIMEOUT = 60.0
_BOOT_ID = re.compile(r"[0-9a-f-]{8,64}")


class SessionError(BangerError):
    """A session script failed in the guest for a reason we did not foresee."""

    http_status = 502


class SessionStatus(StrEnum):
    RUNNING = "running"
    EXITED = "exited"
    #: Neither running nor finished: the guest rebooted or stopped under it,
    #: or its tmux server was killed.
    LOST = "lost"


@dataclass(frozen=True)
class SessionInfo:
    name: str
    command: tuple[str, ...]
    state: SessionStatus
    #: The command's exit status; 128+N when signal N ended it; None unless exited.
    exit_status: int | None
    started_at: datetime | None
    ended_at: datetime | None


@dataclass(frozen=True)
class GuestListing:
    """What one guest said about its sessions, and which boot it was in."""

    boot_id: str
    sessions: tuple[SessionInfo, ...]

    def find(self, name: str) -> SessionInfo | None:
        return next((s for s in self.sessions if s.name == name), None)


@dataclass(frozen=True)
class LogChunk:
    data: bytes
    #: Byte offset of ``data`` in the log (resume a follow at ``offset + len(data)``).
    offset: int


@dataclass(frozen=True)
class SessionEnded:
    """The last event of :func:`follow`: the session is over (or lost)."""

    info: SessionInfo


FollowEvent = LogChunk | SessionEnded


@dataclass(frozen=True)
class StopResult:
    #: ``exited``: it had ended already; ``signalled``: it ended after the
    #: signal; ``killed``: it outlived the timeout and got SIGKILL.
    outcome: Literal["exited", "signalled", "killed"]
    info: SessionInfo


def generate_name(argv: Sequence[str]) -> str:
    """A readable unique-enough name: the program's basename plus random hex."""
    base = argv[0].rsplit("/", 1)[-1].lower() if argv else ""
    base = re.sub(r"[^a-z0-9_.-]+", "-", base).strip("-._")[:40]
    suffix = secrets.token_hex(3)
    return validate_name(f"{base}-{suffix}" if base else f"s-{suffix}")


# --- parsing the guest listing ------------------------------------------------


def _epoch(text: str) -> datetime | None:
    return datetime.fromtimestamp(int(text), UTC) if text.isdigit() else None


def _command(field: str) -> tuple[str, ...]:
    try:
        value = json.loads(base64.b64decode(field, validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ()
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return tuple(value)
    return ()


def _session_state(live: bool, exit_text: str, boot: str, current_boot: str) -> SessionStatus:
    if exit_text.isdigit():
        return SessionStatus.EXITED
    if boot != current_boot:
        return SessionStatus.LOST  # the guest rebooted under it
    # the wrapper writes `exit` before its tmux session closes, so "not live and
    # no exit" means the tmux server died (or was killed) under the session
    return SessionStatus.RUNNING if live else SessionStatus.LOST


def parse_listing(text: str) -> GuestListing:
    """Parse the ``LIST`` script's output; lines that are not well-formed are skipped.

    The guest is not trusted to be tidy (anyone with root there can drop a
    directory next to the sessions), so a stray entry never breaks a listing.
    """
    boot_id: str | None = None
    sessions: list[SessionInfo] = []
    for line in text.split("\n"):
        fields = line.split("\t")
        if fields[0] == "boot" and len(fields) == 2 and _BOOT_ID.fullmatch(fields[1]):
            boot_id = fields[1]
        elif fields[0] == "session" and len(fields) == 8 and boot_id is not None:
            _, name, live, exit_text, started, ended, boot, cmd = fields
            try:
                validate_name(name)
            except InvalidArgument:
                continue
            state = _session_state(live == "1", exit_text, boot, boot_id)
            exited = state is SessionStatus.EXITED
            sessions.append(
                SessionInfo(
                    name=name,
                    command=_command(cmd),
                    state=state,
                    exit_status=int(exit_text) if exited else None,
                    started_at=_epoch(started),
                    ended_at=_epoch(ended) if exited else None,
                )
            )
    if boot_id is None:
        raise SessionError("the guest's session listing has no boot id", hint=_DEBUG_HINT)
    return GuestListing(boot_id, tuple(sessions))


_DEBUG_HINT = "run the command again with --debug; the guest may lack coreutils or tmux"


# --- running the scripts ------------------------------------------------------


def _failure(what: str, name: str, result: ExecResult) -> BangerError:
    status = result.exit_status
    if status == scripts.EXIT_NO_SESSION:
        return NotFound(f"no session named {name!r}", hint="`banger session list` shows them")
    if status == scripts.EXIT_EXISTS:
        return Conflict(
            f"the VM already has a session named {name!r}",
            hint="pick another name, or attach to the existing session",
        )
    if status == scripts.EXIT_NOT_RUNNING:
        return Conflict(
            f"session {name!r} is not running", hint="`banger session logs` shows its output"
        )
    if status == scripts.EXIT_RUNNING:
        return Conflict(f"session {name!r} is still running", hint="stop it first")
    detail = result.err.strip().splitlines()[-1:] or [f"exit status {status}"]
    return SessionError(f"{what} {name!r} failed in the guest: {detail[0]}", hint=_DEBUG_HINT)


async def _script(
    conn: asyncssh.SSHClientConnection, what: str, name: str, argv: Sequence[str]
) -> ExecResult:
    result = await run_on(conn, argv, timeout=SCRIPT_TIMEOUT)
    if result.exit_status != 0:
        raise _failure(what, name, result)
    return result


async def listing(
    conn: asyncssh.SSHClientConnection,
    layout: GuestLayout = DEFAULT_LAYOUT,
    name: str | None = None,
) -> GuestListing:
    """The guest's sessions (or just ``name``) and its current boot id."""
    result = await _script(conn, "listing sessions", name or "*", scripts.list_argv(layout, name))
    return parse_listing(result.out)


async def list_sessions(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout = DEFAULT_LAYOUT
) -> list[SessionInfo]:
    return list((await listing(conn, layout)).sessions)


async def get(
    conn: asyncssh.SSHClientConnection, name: str, layout: GuestLayout = DEFAULT_LAYOUT
) -> SessionInfo:
    found = (await listing(conn, layout, validate_name(name))).find(name)
    if found is None:
        raise NotFound(f"no session named {name!r}", hint="`banger session list` shows them")
    return found


async def start(
    conn: asyncssh.SSHClientConnection,
    argv: Sequence[str],
    *,
    name: str | None = None,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    layout: GuestLayout = DEFAULT_LAYOUT,
    user: str | None = None,
) -> SessionInfo:
    """Start ``argv`` detached under tmux; returns once the command's pid is recorded.

    Raises :class:`~banger.errors.Conflict` if the guest has a session of that
    name already (running or finished: :func:`forget` frees a finished name).
    """
    name = validate_name(name) if name is not None else generate_name(argv)
    start = scripts.start_argv(layout, name, argv, cwd, env, user)
    await _script(conn, "starting session", name, start)
    return await get(conn, name, layout)


async def logs(
    conn: asyncssh.SSHClientConnection,
    name: str,
    *,
    tail: int | None = None,
    layout: GuestLayout = DEFAULT_LAYOUT,
) -> bytes:
    """The session's terminal output so far (raw bytes: ``\\r\\n``, escape sequences)."""
    result = await _script(
        conn, "reading the log of session", name, scripts.logs_argv(layout, name, tail)
    )
    return result.stdout


async def follow(
    conn: asyncssh.SSHClientConnection,
    name: str,
    *,
    offset: int = 0,
    layout: GuestLayout = DEFAULT_LAYOUT,
) -> AsyncGenerator[FollowEvent, None]:
    """The log from ``offset`` on as it grows, then one :class:`SessionEnded`.

    Closing the iterator early (the user pressed Ctrl-C, the API client went
    away) closes the SSH channel and asks the guest's ``tail`` to stop.
    """
    command = remote_command(scripts.follow_argv(layout, name, offset))
    try:
        process = await conn.create_process(command, encoding=None, stdin=asyncssh.DEVNULL)
    except (OSError, asyncssh.Error) as exc:
        raise SSHError(f"following session {name!r} failed: {exc}") from None
    position = offset
    stderr = b""
    try:
        while True:
            data = await process.stdout.read(65536)
            if not data:
                break
            yield LogChunk(data, position)
            position += len(data)
        stderr = await process.stderr.read()
        await process.wait_closed()
    finally:
        if process.exit_status is None:
            # stop the guest's `tail` too (sshd honours signal requests); it would
            # otherwise wait for the session to end before noticing we left
            with suppress(OSError, asyncssh.Error):
                process.send_signal("TERM")
            process.close()
    status = process.exit_status if process.exit_status is not None else 255
    if status != 0:
        raise _failure("following session", name, ExecResult(status, b"", stderr))
    yield SessionEnded(await get(conn, name, layout))


async def send(
    conn: asyncssh.SSHClientConnection,
    name: str,
    text: str,
    *,
    enter: bool = False,
    layout: GuestLayout = DEFAULT_LAYOUT,
) -> None:
    """Type ``text`` literally into the session (``tmux send-keys -l``), then Enter if asked."""
    await _script(conn, "sending to session", name, scripts.send_argv(layout, name, text, enter))


async def stop(
    conn: asyncssh.SSHClientConnection,
    name: str,
    *,
    signal: str = "TERM",
    timeout: float = 10.0,
    layout: GuestLayout = DEFAULT_LAYOUT,
) -> StopResult:
    """Signal the command's process group, wait up to ``timeout`` seconds, then SIGKILL."""
    argv = scripts.stop_argv(layout, name, signal, timeout)
    result = await run_on(conn, argv, timeout=timeout + SCRIPT_TIMEOUT)
    if result.exit_status != 0:
        raise _failure("stopping session", name, result)
    outcome, _, listed = result.out.partition("\n")
    if outcome not in ("exited", "signalled", "killed"):
        raise SessionError(f"stopping session {name!r}: unexpected answer {outcome!r}")
    # the same exec listed the session afterwards (scripts.STOP_THEN_LIST): no second trip
    info = parse_listing(listed).find(name)
    if info is None:
        raise NotFound(f"no session named {name!r}", hint="`banger session list` shows them")
    return StopResult(outcome, info)  # type: ignore[arg-type]  # checked just above


async def forget(
    conn: asyncssh.SSHClientConnection, name: str, layout: GuestLayout = DEFAULT_LAYOUT
) -> None:
    """Delete a finished session's directory (log included) so its name is free again."""
    await _script(conn, "removing session", name, scripts.forget_argv(layout, name))


def attach_argv(
    ssh_base_argv: Sequence[str], name: str, layout: GuestLayout = DEFAULT_LAYOUT
) -> list[str]:
    """The system ``ssh`` argv that attaches a terminal to the session.

    ``ssh_base_argv`` is :func:`banger.guest.ssh.ssh_argv` with ``tty=True``
    and no command (it ends with ``-- host``). ``C-b d`` detaches; the exit
    status is 5 when the session is not running.
    """
    if "-t" not in ssh_base_argv:
        raise InvalidArgument("ssh_base_argv: needs -t (a pty) for an interactive attach")
    return [*ssh_base_argv, remote_command(scripts.attach_command(layout, name))]


def attach_shell_command(name: str, layout: GuestLayout = DEFAULT_LAYOUT) -> str:
    """What to type in a guest shell (``banger vm ssh``) to attach by hand."""
    return shlex.join(["tmux", "-S", layout.socket, "attach", "-t", scripts.tmux_session(name)])
