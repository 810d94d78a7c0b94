"""banger's Python SDK for asyncio: :mod:`banger.sdk`'s shape, every call awaited.

    from banger.sdk.aio import Banger

    async with Banger() as bg:                  # reaches bangerd, starting it like the CLI
        vm = await bg.create("t1", memory="1G")
        results = await asyncio.gather(*(vm.run(["sh", "-c", f"echo {i}"]) for i in range(8)))
        await vm.delete(force=True)
        await bg.pools.set("py", init="fast", size=2)
        await bg.pools.wait_ready("py")
        vm = await bg.create("t2", pool="py")     # a ready guest: no boot

Commands stream over the exec WebSocket natively; the daemon's other calls
(short HTTP exchanges over its socket, and following operations) run in a
worker thread, so none blocks the event loop. Errors and results are the
blocking SDK's (:mod:`banger.sdk`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import io
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from banger.client import BangerClient
from banger.client_files import GuestEntry, path_segment
from banger.errors import BangerError, NotFound
from banger.paths import Paths
from banger.sdk import common
from banger.sdk.common import (
    Command,
    CommandResult,
    OnLine,
    OperationFailed,
    PathLike,
    PoolFailed,
    PoolTimeout,
)

if TYPE_CHECKING:
    from banger.api_models import PoolInfo, VMDetail
    from banger.exec_client import AsyncExec

__all__ = [
    "VM",
    "Banger",
    "CommandHandle",
    "CommandResult",
    "Files",
    "OperationFailed",
    "PoolFailed",
    "PoolTimeout",
    "Pools",
    "Session",
    "Sessions",
    "Workspace",
]

T = TypeVar("T")


async def _thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


class Banger:
    """A connection to bangerd: ``async with Banger() as bg`` (or ``await Banger.connect()``).

    Closing it cancels the commands still running in the background: their
    exec connections close, and bangerd kills them in the guest.
    """

    def __init__(self, paths: Paths | None = None, *, autostart: bool = True) -> None:
        """Not connected yet: ``async with`` (or :meth:`connect`, :meth:`open`) reaches bangerd."""
        self.client = BangerClient(paths)
        self.paths = self.client.paths
        self.autostart = autostart
        self._tasks: set[asyncio.Task[CommandResult]] = set()
        self.pools = Pools(self)

    @classmethod
    async def connect(cls, paths: Paths | None = None, *, autostart: bool = True) -> Banger:
        """Reach bangerd, starting it (as the CLI does) unless ``autostart=False``."""
        bg = cls(paths, autostart=autostart)
        await bg.open()
        return bg

    async def open(self) -> None:
        if self.autostart:
            await _thread(common.connect, self.client)

    async def __aenter__(self) -> Banger:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.client.close()

    async def _needs_helper(self) -> None:
        if self.autostart:
            await _thread(common.ensure_helper, self.paths)

    async def create(
        self,
        name: str | None = None,
        *,
        image: str | None = None,
        kernel: str | None = None,
        cpus: int | None = None,
        memory: int | str | None = None,
        disk_size: int | str | None = None,
        init: str | None = None,
        start: bool = True,
        workspace: PathLike | None = None,
        workspace_dest: str | None = None,
        pool: str | None = None,
    ) -> VM:
        """As :meth:`banger.sdk.Banger.create` (``pool``: take a ready guest of that pool)."""
        request = common.create_request(
            name, image=image, kernel=kernel, cpus=cpus, memory=memory,
            disk_size=disk_size, init=init, start=start, workspace=workspace,
            workspace_dest=workspace_dest, pool=pool,
        )  # fmt: skip
        await self._needs_helper()
        op = await _thread(self.client.create_vm, request)
        try:
            await _thread(common.follow, self.client, op)
            vm = VM(self, (await _thread(self.client.show_vm, op.target or name or "")).name)
            if workspace is not None:  # export's default repository, as after a prepare
                vm.workspace.path = common.host_path(workspace)
        except BaseException:
            if op.target:
                with contextlib.suppress(BangerError):
                    delete = await _thread(self.client.delete_vm, op.target, force=True)
                    await _thread(common.follow, self.client, delete)
            raise
        return vm

    async def get(self, name: str) -> VM:
        return VM(self, (await _thread(self.client.show_vm, name)).name)

    async def list(self) -> builtins.list[VM]:
        return [VM(self, s.name) for s in await _thread(self.client.list_vms)]


class Pools:
    """As :class:`banger.sdk.Pools` (``bg.pools``), awaited."""

    def __init__(self, banger: Banger) -> None:
        self.banger = banger
        self.client = banger.client

    async def set(
        self,
        name: str,
        *,
        image: str | None = None,
        kernel: str | None = None,
        size: int | None = None,
        cpus: int | None = None,
        memory: int | str | None = None,
        init: str | None = None,
    ) -> PoolInfo:
        """As :meth:`banger.sdk.Pools.set`: returns at once, the pool fills in the background."""
        request = common.pool_set_request(
            image=image, kernel=kernel, size=size, cpus=cpus, memory=memory, init=init
        )
        await self.banger._needs_helper()
        return await _thread(self.client.pool_set, name, request)

    async def get(self, name: str) -> PoolInfo:
        return await _thread(self.client.pool_get, name)

    async def list(self) -> builtins.list[PoolInfo]:
        return await _thread(self.client.pool_list)

    async def remove(self, name: str) -> None:
        """As :meth:`banger.sdk.Pools.remove` (followed to its end)."""
        op = await _thread(self.client.pool_rm, name)
        await _thread(common.follow, self.client, op)

    async def wait_ready(self, name: str, *, timeout: float = 600.0) -> PoolInfo:
        """As :meth:`banger.sdk.Pools.wait_ready`: :class:`PoolFailed` if its fill failed,
        :class:`PoolTimeout` (a :class:`TimeoutError`) if still filling after ``timeout``."""
        common.check_wait_timeout(timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            info = await self.get(name)
            if common.pool_ready(info):
                return info
            if loop.time() >= deadline:
                raise PoolTimeout(info, timeout)
            await asyncio.sleep(min(common.POOL_POLL_SECONDS, max(0.0, deadline - loop.time())))


class VM:
    """A VM, by name (as :class:`banger.sdk.VM`, every call awaited)."""

    def __init__(self, banger: Banger, name: str) -> None:
        self.banger = banger
        self.client = banger.client
        self.name = name
        self.files = Files(self.client, name)
        self.sessions = Sessions(self.client, name)
        self.workspace = Workspace(self.client, name)

    def __repr__(self) -> str:
        return f"VM({self.name!r})"

    async def info(self) -> VMDetail:
        return await _thread(self.client.show_vm, self.name)

    @overload
    async def run(
        self,
        command: Command,
        *,
        timeout: float | None = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | None = ...,
        stdin: bytes | None = ...,
        background: Literal[False] = ...,
        on_stdout: OnLine | None = ...,
        on_stderr: OnLine | None = ...,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        command: Command,
        *,
        timeout: float | None = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
        user: str | None = ...,
        stdin: bytes | None = ...,
        background: Literal[True],
        on_stdout: OnLine | None = ...,
        on_stderr: OnLine | None = ...,
    ) -> CommandHandle: ...

    async def run(
        self,
        command: Command,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        stdin: bytes | None = None,
        background: bool = False,
        on_stdout: OnLine | None = None,
        on_stderr: OnLine | None = None,
    ) -> CommandResult | CommandHandle:
        """As :meth:`banger.sdk.VM.run`: a **list is an argv**, a **string a shell command**
        (``sh -c``). Callbacks run on the event loop. Cancelling the call kills the command."""
        request = common.exec_request(command, env=env, cwd=cwd, user=user, timeout=timeout)
        handle = await self.client.open_exec(self.name, request)
        drive = common.drive(handle, stdin, on_stdout, on_stderr)
        if not background:
            return await drive
        task = asyncio.ensure_future(drive)
        self.banger._tasks.add(task)
        task.add_done_callback(self.banger._tasks.discard)
        return CommandHandle(handle, task)

    async def _follow(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        op = await _thread(fn, self.name, *args, **kwargs)
        return await _thread(common.follow, self.client, op)

    async def start(self) -> None:
        await self.banger._needs_helper()
        await self._follow(self.client.start_vm)

    async def stop(self, timeout: float = 30.0) -> None:
        await self._follow(self.client.stop_vm, timeout)

    async def restart(self) -> None:
        await self.banger._needs_helper()
        await self._follow(self.client.restart_vm)

    async def delete(self, *, force: bool = False) -> None:
        """As :meth:`banger.sdk.VM.delete`."""
        await self._follow(self.client.delete_vm, force=force)

    async def pause(self) -> None:
        await self._follow(self.client.pause_vm)

    async def resume(self) -> None:
        await self._follow(self.client.resume_vm)

    async def snapshot(self, name: str | None = None, *, stop: bool = False) -> dict[str, Any]:
        """As :meth:`banger.sdk.VM.snapshot`."""

        def save() -> dict[str, Any]:
            from banger.api_models import Operation

            path = f"/v1/vms/{path_segment(self.name)}/snapshots"
            started = self.client.request("POST", path, json={"name": name, "stop": stop})
            common.follow(self.client, Operation.model_validate(started["operation"]))
            return dict(self.client.get_json(f"/v1/snapshots/{path_segment(started['snapshot'])}"))

        return await _thread(save)


class CommandHandle:
    """A command running in the background (``await vm.run(..., background=True)``)."""

    def __init__(self, handle: AsyncExec, task: asyncio.Future[CommandResult]) -> None:
        self._handle = handle
        self._task = task

    @property
    def done(self) -> bool:
        return self._task.done()

    async def wait(self, timeout: float | None = None) -> CommandResult:
        """Its result once it ends (:class:`TimeoutError` past ``timeout``; it keeps running)."""
        return await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def signal(self, name: str) -> None:
        if not self._task.done():
            await self._handle.signal(name)

    async def kill(self, timeout: float | None = 60.0) -> CommandResult:
        await self.signal("KILL")
        return await self.wait(timeout)


class Files:
    """As :class:`banger.sdk.Files`, awaited."""

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm

    async def read(self, path: str) -> bytes:
        out = io.BytesIO()
        await _thread(self.client.read_file, self.vm, path, out)
        return out.getvalue()

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding)

    async def write(
        self,
        path: str,
        data: bytes | str | IO[bytes],
        *,
        mode: int | None = None,
        parents: bool = False,
    ) -> GuestEntry:
        source = data.encode() if isinstance(data, str) else data
        return await _thread(
            self.client.write_file, self.vm, path, source, mode=mode, parents=parents
        )

    async def list(self, path: str) -> builtins.list[GuestEntry]:
        return await _thread(self.client.list_files, self.vm, path)

    async def stat(self, path: str) -> GuestEntry:
        return await _thread(self.client.stat_file, self.vm, path)

    async def exists(self, path: str) -> bool:
        try:
            await self.stat(path)
        except NotFound:
            return False
        return True

    async def mkdir(
        self, path: str, *, parents: bool = True, mode: int | None = None
    ) -> GuestEntry:
        return await _thread(self.client.make_dir, self.vm, path, parents=parents, mode=mode)

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        await _thread(self.client.remove_file, self.vm, path, recursive=recursive)

    async def rename(self, source: str, dest: str, *, overwrite: bool = False) -> GuestEntry:
        return await _thread(self.client.rename_file, self.vm, source, dest, overwrite=overwrite)


class Sessions:
    """As :class:`banger.sdk.Sessions`, awaited."""

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm

    async def start(
        self,
        name: str,
        command: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Session:
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        record = await _thread(
            self.client.start_session, self.vm, argv, name=name, cwd=cwd, env=env
        )
        return Session(self.client, self.vm, str(record.get("name", name)))

    async def get(self, name: str) -> Session:
        await _thread(self.client.show_session, self.vm, name)
        return Session(self.client, self.vm, name)

    async def list(self) -> builtins.list[Session]:
        records = await _thread(self.client.list_sessions, self.vm)
        return [Session(self.client, self.vm, str(r["name"])) for r in records]


class Session:
    """As :class:`banger.sdk.Session`, awaited."""

    def __init__(self, client: BangerClient, vm: str, name: str) -> None:
        self.client = client
        self.vm = vm
        self.name = name

    async def info(self) -> dict[str, Any]:
        return await _thread(self.client.show_session, self.vm, self.name)

    async def send(self, text: str, *, enter: bool = False) -> None:
        await _thread(self.client.send_to_session, self.vm, self.name, text, enter=enter)

    async def logs(self, tail: int | None = None) -> str:
        return await _thread(common.session_text, self.client, self.vm, self.name, tail)

    async def stop(self, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]:
        return await _thread(
            self.client.stop_session, self.vm, self.name, signal=signal, timeout=timeout
        )

    async def remove(self) -> None:
        await _thread(self.client.remove_session, self.vm, self.name)


class Workspace:
    """As :class:`banger.sdk.Workspace`, awaited."""

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm
        self.path: str | None = None

    async def prepare(
        self, path: PathLike | None = None, *, dest: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"path": common.host_path(path)}
        if dest is not None:
            body["dest"] = dest
        op = await _thread(self.client.workspace_prepare, self.vm, body)
        result = await _thread(common.follow, self.client, op)
        self.path = body["path"]
        return result

    async def export(
        self,
        *,
        branch: str | None = None,
        path: PathLike | None = None,
        guest_path: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"path": common.host_path(path or self.path), "force": force}
        if branch is not None:
            body["branch"] = branch
        if guest_path is not None:
            body["guest_path"] = guest_path
        op = await _thread(self.client.workspace_export, self.vm, body)
        return await _thread(common.follow, self.client, op)
