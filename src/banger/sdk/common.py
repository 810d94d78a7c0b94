"""What the blocking SDK (:mod:`banger.sdk`) and the asyncio one (:mod:`banger.sdk.aio`) share.

Everything here either needs no I/O (request building, results) or is one
blocking exchange over :class:`~banger.client.BangerClient` (following an
operation), which the asyncio SDK runs in a worker thread. Commands run over
the exec WebSocket with :mod:`banger.exec_client`'s asyncio core in both SDKs
(:func:`drive`): the blocking one runs it on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from banger.errors import BangerError, InvalidArgument

if TYPE_CHECKING:
    from banger.api_models import Operation, PoolInfo, PoolSetRequest, VMCreateRequest
    from banger.client import BangerClient
    from banger.exec_client import AsyncExec
    from banger.paths import Paths

#: A command: a list is an argv run as is; a string is a shell command (``sh -c``).
Command = Sequence[str] | str
#: A host path.
PathLike = str | os.PathLike[str]
#: Called with each line of output, its newline removed (the last, unended, line at the end).
OnLine = Callable[[str], object]
#: The operation event holding a workspace prepare/export outcome (workspace_svc.EV_RESULT).
EV_RESULT = "result"


class OperationFailed(BangerError):
    """An operation of bangerd (create, start, snapshot, workspace export…) failed.

    The message says which, at which stage and why (the daemon's words);
    ``hint`` is the daemon's hint; ``operation`` the id for ``banger ops show``.
    """

    def __init__(self, message: str, hint: str | None, operation: str, stage: str | None) -> None:
        super().__init__(message, hint)
        self.operation = operation
        self.stage = stage


class PoolFailed(BangerError):
    """A pool's last fill failed (``pools.wait_ready``): its template guest did not boot,
    a restore failed… ``error`` is the pool's own (``banger pool show``); the daemon does
    not retry until the pool is set again."""

    def __init__(self, pool: str, error: str) -> None:
        super().__init__(
            f"pool {pool}: its last fill failed: {error}",
            f"fix the cause, then `pools.set({pool!r})` (or `banger pool set {pool}`) to fill"
            " it again; `banger ops list --all` shows the pool.fill operation",
        )
        self.pool = pool
        self.error = error


class PoolTimeout(BangerError, TimeoutError):
    """``pools.wait_ready`` gave up: the pool was still filling (``info``: as last seen).

    Also a :class:`TimeoutError`. The pool keeps filling in the background.
    """

    def __init__(self, info: PoolInfo, timeout: float) -> None:
        super().__init__(
            f"pool {info.name}: not ready after {timeout:g} s"
            f" ({len(info.ready)}/{info.size} guests ready, {info.state})",
            f"it keeps filling; `banger pool show {info.name}` and `banger ops list` show how far",
        )
        self.pool = info.name
        self.info = info


@dataclass(frozen=True)
class CommandResult:
    """How a command ended and what it wrote.

    ``exit_code`` is None when a signal ended it (``signal`` names it, ``TERM``,
    ``KILL``…); ``timed_out`` says the ``timeout`` given to ``run`` killed it.
    """

    exit_code: int | None
    signal: str | None
    timed_out: bool
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def memory_mib(memory: int | str | None) -> int | None:
    """``memory`` as MiB: an int is MiB, a string a size (``"1G"``, ``"512M"``)."""
    if memory is None:
        return None
    from banger.config.values import parse_memory_mib

    try:
        return parse_memory_mib(memory)
    except ValueError as exc:
        raise InvalidArgument(f"memory: {exc}", hint='MiB as an int, or a size like "1G"') from None


def disk_bytes(size: int | str | None) -> int | None:
    """A work disk size: an int is bytes, a string a size (``"4G"``)."""
    if size is None:
        return None
    from banger.config.values import parse_size

    try:
        return parse_size(size)
    except ValueError as exc:
        hint = 'bytes as an int, or a size like "4G"'
        raise InvalidArgument(f"disk_size: {exc}", hint=hint) from None


def create_request(
    name: str | None,
    *,
    image: str | None,
    kernel: str | None,
    cpus: int | None,
    memory: int | str | None,
    disk_size: int | str | None,
    init: str | None,
    start: bool,
    workspace: PathLike | None = None,
    workspace_dest: str | None = None,
    pool: str | None = None,
) -> VMCreateRequest:
    from banger.api_models import CreateWorkspaceRequest, VMCreateRequest

    if pool is not None:
        given = {"image": image, "kernel": kernel, "cpus": cpus, "memory": memory,
                 "disk_size": disk_size, "init": init}  # fmt: skip
        refuse_pool_shape(pool, given, start)
    return VMCreateRequest(
        pool=pool,
        name=name,
        image=image,
        kernel=kernel,
        vcpus=cpus,
        memory_mib=memory_mib(memory),
        work_disk_size=disk_bytes(disk_size),
        init=init,
        start=start,
        # written onto the work disk before the first boot (no copy over SSH)
        workspace=CreateWorkspaceRequest(path=host_path(workspace), dest=workspace_dest)
        if workspace is not None
        else None,
    )


def refuse_pool_shape(pool: str, given: Mapping[str, object], start: bool) -> None:
    """A guest taken from ``pool`` is made (the pool's spec) and running: an argument that
    says otherwise is refused here, named as the daemon would (before any request)."""
    for argument, value in given.items():
        if value is not None:
            raise InvalidArgument(
                f"{argument}: a VM from pool {pool} has the pool's; leave {argument} out",
                hint=f"pools.get({pool!r}) shows what its guests are; pools.set changes that",
            )
    if not start:
        raise InvalidArgument(
            "start: a VM taken from a pool is already running; it cannot be created stopped"
        )


def pool_set_request(
    *,
    image: str | None,
    kernel: str | None,
    size: int | None,
    cpus: int | None,
    memory: int | str | None,
    init: str | None,
) -> PoolSetRequest:
    """``pools.set``'s body: None keeps the pool's value (a new pool: ``vm create``'s defaults)."""
    from banger.api_models import PoolSetRequest

    return PoolSetRequest(
        image=image, kernel=kernel, size=size, vcpus=cpus, memory_mib=memory_mib(memory), init=init
    )


#: Seconds between two looks at a pool in ``pools.wait_ready`` (each is one short GET).
POOL_POLL_SECONDS = 0.5


def pool_ready(info: PoolInfo) -> bool:
    """Whether ``wait_ready`` is done with ``info``: every guest ready, or none to make
    (size 0: ``empty``); a failed fill raises :class:`PoolFailed` (it is not retried)."""
    if info.state == "failed":
        raise PoolFailed(info.name, (info.error or "no error recorded").strip())
    return info.state in ("ready", "empty")


def check_wait_timeout(timeout: float) -> None:
    if timeout <= 0:
        raise InvalidArgument(f"timeout: must be more than 0 seconds, got {timeout}")


def host_path(path: PathLike | None) -> str:
    """An absolute, resolved host path (bangerd has another working directory)."""
    return str((Path(path) if path is not None else Path.cwd()).resolve())


def ensure_helper(paths: Paths) -> None:
    """Start the root helper if nothing answers and we may (as the CLI does before a boot)."""
    from banger.helper_start import ensure_helper as start_if_absent

    start_if_absent(paths)


def connect(client: BangerClient) -> None:
    """Reach bangerd, starting it the way the CLI does when nothing answers."""
    from banger.autostart import ensure_daemon
    from banger.client import DaemonNotReachable

    try:
        client.version()
    except DaemonNotReachable as exc:
        ensure_daemon(client.paths, exc)


def follow(client: BangerClient, op: Operation) -> dict[str, Any]:
    """Wait for ``op`` to end; its ``result`` event's data ({} if none). Failure raises."""
    result: dict[str, Any] = {}
    for event in client.stream_events(op.id):
        if event.kind == EV_RESULT:
            result = dict(event.data)
    final = client.get_op(op.id)
    if final.state == "succeeded":
        return result
    where = f"{final.kind} {final.target or ''}".strip()
    if final.state != "failed":
        raise OperationFailed(
            f"{where}: its progress stream ended while it was {final.state}",
            f"see `banger ops show {final.id}` and the daemon log",
            final.id,
            final.stage,
        )
    error = (final.error or "no error recorded").strip()
    raise OperationFailed(
        f"{where} failed at stage {final.stage or '-'}: {error}", final.hint, final.id, final.stage
    )


def session_text(client: BangerClient, vm: str, name: str, tail: int | None) -> str:
    """A session's log so far, decoded (``tail``: only its last lines)."""
    out: list[bytes] = []
    for event in client.session_logs(vm, name, tail=tail):
        if event.get("kind") == "output":
            out.append(base64.b64decode(str(event.get("data", ""))))
    return b"".join(out).decode("utf-8", "replace")


class _Lines:
    """Output to a per-line callback: decoded incrementally (a character may span chunks)."""

    def __init__(self, callback: OnLine) -> None:
        self.callback = callback
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""

    def feed(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + self.decoder.decode(data)).split("\n")
        for line in lines:
            self.callback(line)

    def end(self) -> None:
        rest = self.pending + self.decoder.decode(b"", final=True)
        self.pending = ""
        if rest:
            self.callback(rest)


async def drive(
    handle: AsyncExec,
    stdin: bytes | None,
    on_stdout: OnLine | None,
    on_stderr: OnLine | None,
) -> CommandResult:
    """Feed ``stdin`` (then end it), collect the output, call the callbacks, until the end.

    Cancelled (the caller was interrupted): the exec connection closes, and
    bangerd kills the command's processes in the guest.
    """
    writer = asyncio.create_task(_feed(handle, stdin))
    out: list[bytes] = []
    err: list[bytes] = []
    lines = {
        "stdout": _Lines(on_stdout) if on_stdout is not None else None,
        "stderr": _Lines(on_stderr) if on_stderr is not None else None,
    }
    try:
        async for stream, data in handle.events():
            (out if stream == "stdout" else err).append(data)
            splitter = lines[stream]
            if splitter is not None:
                splitter.feed(data)
        for splitter in lines.values():
            if splitter is not None:
                splitter.end()
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await handle.close()
    ended = handle.result
    assert ended is not None
    return CommandResult(
        ended.exit_code, ended.signal, ended.timed_out, b"".join(out), b"".join(err)
    )


async def _feed(handle: AsyncExec, data: bytes | None) -> None:
    if data:
        await handle.write(data)
    await handle.close_stdin()


def exec_request(
    command: Command,
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
    user: str | None,
    timeout: float | None,
) -> dict[str, Any]:
    """The exec API's first frame; an empty argv or shell string is refused here."""
    from banger import exec_client

    if isinstance(command, str):
        if not command.strip():
            raise InvalidArgument("command: empty shell command")
    elif not command or not all(isinstance(arg, str) for arg in command):
        raise InvalidArgument("command: an argv is a non-empty list of strings")
    if timeout is not None and timeout <= 0:
        raise InvalidArgument(f"timeout: must be more than 0 seconds, got {timeout}")
    return exec_client.exec_request(command, env=env, cwd=cwd, user=user, timeout=timeout)
