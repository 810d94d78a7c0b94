"""SSH into guests with a pinned host key (asyncssh), and the argv for ``banger vm ssh``.

Every connection verifies the guest's host key against the known_hosts file
banger maintains (the public half of the per-VM key it wrote onto the work
disk). There is no trust-on-first-use and no "accept anything": an unknown or
changed key is refused with :class:`HostKeyMismatch`. banger's own client key
is the only identity offered; the user's agent and ``~/.ssh/config`` are not
consulted.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from banger.errors import BangerError, InvalidArgument

#: How many console lines a boot-timeout error carries.
CONSOLE_TAIL_LINES = 20
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST = re.compile(r"[A-Za-z0-9_.:-]+")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


class SSHError(BangerError):
    """The guest could not be reached or refused us."""

    http_status = 502


class HostKeyMismatch(SSHError):
    """The guest's host key is not the one banger pinned for it."""


class KeyRefused(SSHError):
    """The guest's sshd did not accept banger's client key."""


class SSHTimeout(SSHError):
    """The guest did not answer SSH in time."""

    http_status = 504


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to log into one guest."""

    host: str
    known_hosts: Path
    client_key: Path
    port: int = 22
    user: str = "root"

    def __post_init__(self) -> None:
        if not _HOST.fullmatch(self.host) or self.host.startswith("-"):
            raise InvalidArgument(f"host: not a host name or address: {self.host!r}")
        if not 1 <= self.port <= 65535:
            raise InvalidArgument(f"port: out of range: {self.port}")
        if not _ENV_NAME.fullmatch(self.user):
            raise InvalidArgument(f"user: not a user name: {self.user!r}")

    @property
    def where(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ExecResult:
    #: The remote command's exit status; ``-N`` if it was killed by signal N.
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")


def remote_command(
    command: Sequence[str] | str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> str:
    """The shell text sent to the guest.

    An argv is quoted with :func:`shlex.join` and ``exec``'d, so every argument
    arrives as given (quotes, ``$``, newlines, unicode); a string is a shell
    command on purpose. The environment is set with ``export`` lines rather than
    SSH env requests, which sshd drops unless ``AcceptEnv`` lists them.
    """
    lines = []
    for name, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(name):
            raise InvalidArgument(f"env: not a variable name: {name!r}")
        lines.append(f"export {name}={shlex.quote(value)}")
    if cwd is not None:
        lines.append(f"cd -- {shlex.quote(cwd)} || exit 1")
    if isinstance(command, str):
        lines.append(command)
    else:
        if not command:
            raise InvalidArgument("command: empty argv")
        lines.append("exec " + shlex.join(command))
    return "\n".join(lines)


def console_tail(path: Path | None, lines: int = CONSOLE_TAIL_LINES) -> str:
    """The last ``lines`` lines of a console log, without escape sequences."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    text = _CONTROL.sub("", data.decode("utf-8", "replace").replace("\r", ""))
    kept = [line.rstrip() for line in text.splitlines()]
    while kept and not kept[-1]:
        kept.pop()
    return "\n".join(kept[-lines:])


def _check_files(target: SSHTarget) -> None:
    for name, path in (("known_hosts", target.known_hosts), ("client_key", target.client_key)):
        if not path.is_file():
            raise SSHError(f"{name}: {path} does not exist", hint="run `banger doctor`")


async def connect(
    target: SSHTarget, timeout: float, *, keepalive: float | None = None
) -> asyncssh.SSHClientConnection:
    """An authenticated connection with the pinned host key; the caller closes it.

    ``keepalive`` (seconds): probe an idle connection that often and close it
    after three unanswered probes, so a held connection to a dead guest is noticed.
    """
    return await _connect(target, timeout, keepalive=keepalive)


async def _connect(
    target: SSHTarget, timeout: float, *, keepalive: float | None = None
) -> asyncssh.SSHClientConnection:
    _check_files(target)
    try:
        async with asyncio.timeout(timeout):
            return await asyncssh.connect(
                target.host,
                target.port,
                username=target.user,
                known_hosts=str(target.known_hosts),
                client_keys=[str(target.client_key)],
                agent_path=None,
                config=None,
                password=None,
                kbdint_auth=False,
                gss_auth=False,
                host_based_auth=False,
                preferred_auth="publickey",
                keepalive_interval=keepalive or 0,
                keepalive_count_max=3,
            )
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyMismatch(
            f"host key of {target.where} does not match the key pinned in {target.known_hosts}",
            hint="the guest is not the VM banger started (or its key was replaced); "
            "refusing to connect",
        ) from None
    except asyncssh.PermissionDenied:
        raise KeyRefused(
            f"{target.where} refused banger's key {target.client_key} for {target.user}",
            hint="the work disk's /root/.ssh/authorized_keys does not hold banger's key",
        ) from None
    except TimeoutError:
        raise SSHTimeout(f"SSH to {target.where} did not complete within {timeout:g}s") from None
    except (OSError, asyncssh.Error) as exc:
        raise SSHError(f"SSH to {target.where} failed: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def open_connection(
    target: SSHTarget, timeout: float = 30.0
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An authenticated connection with the pinned host key, closed on exit."""
    conn = await _connect(target, timeout)
    try:
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()


async def _banner(host: str, port: int, timeout: float) -> None:
    """Return once something on host:port speaks SSH (sends an ``SSH-`` banner)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            line = await reader.readline()
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
    if not line.startswith(b"SSH-"):
        raise ConnectionError(f"no SSH banner (got {line[:40]!r})")


async def wait_for_ssh(target: SSHTarget, timeout: float, console_log: Path | None = None) -> None:
    """Wait until the guest's sshd answers and accepts banger's key with the pinned host key."""
    conn = await connect_when_ready(target, timeout, console_log)
    conn.close()
    await conn.wait_closed()


async def connect_when_ready(
    target: SSHTarget,
    timeout: float,
    console_log: Path | None = None,
    *,
    keepalive: float | None = None,
) -> asyncssh.SSHClientConnection:
    """:func:`wait_for_ssh`, returning the connection that proved it (bangerd keeps it).

    Connection attempts are retried with a short backoff (the guest is booting:
    refused and reset connections are expected). A host key mismatch or a
    refused key is final. On timeout the error carries the console tail.
    """
    _check_files(target)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.1
    last_error = "no answer"
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            await _banner(target.host, target.port, min(remaining, 3.0))
            remaining = deadline - loop.time()
            return await _connect(target, max(remaining, 0.1), keepalive=keepalive)
        except (HostKeyMismatch, KeyRefused):
            raise
        except SSHError as exc:
            last_error = exc.message
        except (OSError, TimeoutError) as exc:
            last_error = _describe(exc) if not isinstance(exc, TimeoutError) else "timed out"
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(delay, remaining))
        # A refused connect costs one SYN/RST on the bridge; a longer back-off
        # only adds up to a second to every boot (measured by bench/orchestration).
        delay = min(delay * 1.5, 0.2)
    message = f"guest {target.where} did not answer SSH within {timeout:g}s ({last_error})"
    tail = console_tail(console_log)
    if tail:
        message += f"; last console lines:\n{tail}"
    raise SSHTimeout(
        message, hint=f"see the full console log: {console_log}" if console_log else None
    )


async def run_on(
    conn: asyncssh.SSHClientConnection,
    command: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes | str | None = None,
    timeout: float | None = None,
) -> ExecResult:
    """Run a command over an open connection; a non-zero exit is a result, not an error."""
    text = remote_command(command, env, cwd)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        result = await conn.run(text, input=data, encoding=None, check=False, timeout=timeout)
    except asyncssh.TimeoutError:
        raise SSHTimeout(f"remote command did not finish within {timeout:g}s") from None
    except (OSError, asyncssh.Error) as exc:
        raise SSHError(f"remote command failed: {_describe(exc)}") from None
    status = result.returncode
    if status is None:  # the channel closed without an exit status
        status = 255
    stdout = result.stdout if isinstance(result.stdout, bytes) else b""
    stderr = result.stderr if isinstance(result.stderr, bytes) else b""
    return ExecResult(status, stdout, stderr)


async def run(
    target: SSHTarget,
    command: Sequence[str] | str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: bytes | str | None = None,
    timeout: float | None = None,
    connect_timeout: float = 30.0,
) -> ExecResult:
    """Connect, run one command, disconnect.

    To run several commands, reuse one connection: :func:`open_connection` + :func:`run_on`.
    """
    async with open_connection(target, connect_timeout) as conn:
        return await run_on(conn, command, env=env, cwd=cwd, stdin=stdin, timeout=timeout)


def _ssh_path(path: Path) -> str:
    """A path for ssh options: ssh expands ``%`` tokens and splits on spaces unless quoted."""
    text = str(path.absolute())
    if '"' in text or "\n" in text:
        raise InvalidArgument(f"path: quotes or newlines are not supported: {text!r}")
    return '"' + text.replace("%", "%%") + '"'


def ssh_argv(
    target: SSHTarget,
    command: Sequence[str] | str | None = None,
    *,
    tty: bool = False,
    ssh: str = "ssh",
) -> list[str]:
    """The system ``ssh`` command line for ``banger vm ssh``; its exit status is the remote one."""
    argv = [
        ssh,
        "-F", "/dev/null",  # the user's ssh config must not redirect or weaken this
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={_ssh_path(target.known_hosts)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", "LogLevel=ERROR",
        "-o", f"IdentityFile={_ssh_path(target.client_key)}",
        "-p", str(target.port),
        "-l", target.user,
    ]  # fmt: skip
    argv += ["-t"] if tty else ["-T", "-o", "BatchMode=yes"]
    argv += ["--", target.host]
    if command is not None:
        argv.append(remote_command(command))
    return argv
