"""banger's Python SDK: sandboxes for programs (blocking; :mod:`banger.sdk.aio` for asyncio).

    from banger.sdk import Banger

    with Banger() as bg:                         # reaches bangerd, starting it like the CLI
        vm = bg.create("t1", cpus=2, memory="1G", workspace=".")
        r = vm.run(["python3", "-c", "print(6*7)"], timeout=60)
        print(r.exit_code, r.stdout)             # 0 42
        vm.files.write("/root/in.txt", b"hi")
        vm.workspace.export(branch="banger/t1")  # the guest's work as a host branch
        vm.delete()

        bg.pools.set("py", init="fast", size=2)   # keep 2 guests booted and ready
        bg.pools.wait_ready("py", timeout=600)
        vm = bg.create("t2", pool="py")          # takes one: no boot

It speaks to bangerd over its socket with the CLI's own client
(:class:`banger.client.BangerClient`, the exec WebSocket of
:mod:`banger.exec_client`, the files API), so it needs what the CLI needs: a
daemon (started on first use when banger is not installed as a service) and,
to boot VMs, the root helper (started with ``sudo -n`` on first use when it
can be, as the CLI does).

Errors are :mod:`banger.errors` classes carrying the daemon's ``message``,
``hint`` and, for bad input, ``field``: :class:`~banger.errors.NotFound`
(unknown VM, missing guest path), :class:`~banger.errors.Conflict` (VM not
running, name taken), :class:`~banger.errors.InvalidArgument`,
:class:`~banger.errors.PermissionDenied`, :class:`~banger.errors.DaemonUnavailable`;
a failed operation (a boot, an export) is :class:`OperationFailed`; a pool whose
fill failed is :class:`PoolFailed`, one still filling past ``wait_ready``'s
timeout :class:`PoolTimeout` (a :class:`TimeoutError`). A command that exits
non-zero is a result, not an error.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import io
import threading
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar, overload

from banger.client import BangerClient
from banger.client_files import GuestEntry
from banger.errors import (
    BangerError,
    Conflict,
    DaemonUnavailable,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
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
    "BangerError",
    "CommandHandle",
    "CommandResult",
    "Conflict",
    "DaemonUnavailable",
    "Files",
    "GuestEntry",
    "InvalidArgument",
    "NotFound",
    "OperationFailed",
    "PermissionDenied",
    "PoolFailed",
    "PoolTimeout",
    "Pools",
    "Session",
    "Sessions",
    "Workspace",
]

T = TypeVar("T")


class _LoopThread:
    """A private event loop on a daemon thread: the blocking SDK's commands run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="banger-sdk-exec", daemon=True
        )
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to its end; interrupted (Ctrl-C), it is cancelled before we return."""
        return _result(self.submit(coro))

    def close(self) -> None:
        """Cancel what still runs (its exec connections close: bangerd kills the commands)."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            self.submit(cancel_all()).result(timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
        if not self.loop.is_running():
            self.loop.close()


def _result(future: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise
    except BaseException:
        if not future.done():  # KeyboardInterrupt while waiting: stop the remote command too
            future.cancel()
            concurrent.futures.wait([future], timeout=10)
        raise


class Banger:
    """A connection to bangerd: create, find and list VMs; ``pools``: pools of ready guests.

    ``paths`` defaults to the CLI's (``BANGER_HOME``, XDG); ``autostart=False``
    raises :class:`~banger.errors.DaemonUnavailable` instead of starting
    bangerd and the helper. Use it as a context manager, or call :meth:`close`:
    commands still running in the background are killed then.
    """

    def __init__(self, paths: Paths | None = None, *, autostart: bool = True) -> None:
        self.client = BangerClient(paths)
        self.paths = self.client.paths
        self.autostart = autostart
        self._loop: _LoopThread | None = None
        self._loop_lock = threading.Lock()
        self.pools = Pools(self)
        if autostart:
            common.connect(self.client)

    def __enter__(self) -> Banger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._loop_lock:
            if self._loop is not None:
                self._loop.close()
                self._loop = None
        self.client.close()

    def loop(self) -> _LoopThread:
        with self._loop_lock:
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop

    def _needs_helper(self) -> None:
        if self.autostart:
            common.ensure_helper(self.paths)

    # -- VMs -------------------------------------------------------------------
    def create(
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
        """Create a VM, boot it (unless ``start=False``) and copy a repository in.

        ``image``/``kernel``: a name or id, default the default ones (config
        ``vm.image``, ``debian:bookworm`` unless changed; ``banger image default``).
        ``memory``: MiB, or a size like ``"1G"``; ``disk_size``: the work disk
        (bytes, or ``"4G"``); ``init``: ``"systemd"`` or ``"fast"``.
        ``workspace``: a path in a host git repository, copied to
        ``workspace_dest`` (under ``/root``, default ``/root/<repo name>``) as
        ``banger workspace prepare`` does, but onto the work disk before the
        first boot (``vm create --workspace``; with ``start=False`` too).
        Nothing is left half-made: if the copy fails, the VM is deleted and the
        error raised.

        ``pool``: take a ready guest of that pool (:attr:`Banger.pools`) instead
        of booting one: it is renamed ``name`` and given this host's file_sync,
        git identity and ``workspace`` (copied over SSH, the guest being up);
        with no ready guest one is booted with the pool's spec. ``image``,
        ``kernel``, ``cpus``, ``memory``, ``disk_size``, ``init`` and
        ``start=False`` are the pool's to say: given with ``pool``, they are
        refused (:class:`~banger.errors.InvalidArgument`) before any request.
        """
        request = common.create_request(
            name, image=image, kernel=kernel, cpus=cpus, memory=memory,
            disk_size=disk_size, init=init, start=start, workspace=workspace,
            workspace_dest=workspace_dest, pool=pool,
        )  # fmt: skip
        self._needs_helper()
        op = self.client.create_vm(request)
        vm = VM(self, op.target or name or "")
        try:
            common.follow(self.client, op)
            vm = VM(self, self.client.show_vm(vm.name).name)
            if workspace is not None:  # export's default repository, as after a prepare
                vm.workspace.path = common.host_path(workspace)
        except BaseException:
            if op.target:
                _delete_quietly(self.client, op.target)
            raise
        return vm

    def get(self, name: str) -> VM:
        """The VM named (or with id) ``name``; :class:`~banger.errors.NotFound` if none."""
        return VM(self, self.client.show_vm(name).name)

    def list(self) -> builtins.list[VM]:
        """Every VM of this owner, in any state."""
        return [VM(self, summary.name) for summary in self.client.list_vms()]


class Pools:
    """Pools of ready guests (``bg.pools``): ``bg.create(name, pool=P)`` takes one of P's.

    A pool boots one guest with its spec, snapshots it as its template and keeps
    ``size`` guests restored from it running; bangerd fills it in the background
    and refills it after every take (``banger pool``, the same pools).
    """

    def __init__(self, banger: Banger) -> None:
        self.banger = banger
        self.client = banger.client

    def set(
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
        """Create pool ``name`` or change it; an argument left None keeps its value (a new
        pool: ``create``'s defaults, and ``size`` 1). ``memory``: MiB, or a size like
        ``"1G"``; ``size``: guests kept ready (0-16). Returns at once: the pool fills in
        the background (:meth:`wait_ready`); a change of image, kernel, cpus, memory or
        init replaces its template and guests.
        """
        request = common.pool_set_request(
            image=image, kernel=kernel, size=size, cpus=cpus, memory=memory, init=init
        )
        self.banger._needs_helper()  # the filler boots the template and restores guests
        return self.client.pool_set(name, request)

    def get(self, name: str) -> PoolInfo:
        """Pool ``name`` now: ``state`` (filling, ready, failed, empty), ``ready`` guests,
        ``error``…; :class:`~banger.errors.NotFound` if none."""
        return self.client.pool_get(name)

    def list(self) -> builtins.list[PoolInfo]:
        return self.client.pool_list()

    def remove(self, name: str) -> None:
        """Remove pool ``name``, its ready guests and its template, to the end (VMs taken
        from it stay); a failure is :class:`OperationFailed`."""
        common.follow(self.client, self.client.pool_rm(name))

    def wait_ready(self, name: str, *, timeout: float = 600.0) -> PoolInfo:
        """Wait until every guest of pool ``name`` is ready (``state == "ready"``; a pool
        of size 0 has none to wait for) and return it. Its fill failing raises
        :class:`PoolFailed` with the pool's error; still filling after ``timeout``
        seconds, :class:`PoolTimeout` (it keeps filling)."""
        common.check_wait_timeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            info = self.client.pool_get(name)
            if common.pool_ready(info):
                return info
            if time.monotonic() >= deadline:
                raise PoolTimeout(info, timeout)
            time.sleep(min(common.POOL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _delete_quietly(client: BangerClient, name: str) -> None:
    with contextlib.suppress(BangerError):  # the first error is the one to report
        common.follow(client, client.delete_vm(name, force=True))


class VM:
    """A VM, by name. Methods ask bangerd each time; nothing is cached but the name."""

    def __init__(self, banger: Banger, name: str) -> None:
        self.banger = banger
        self.name = name
        self.files = Files(banger.client, name)
        self.sessions = Sessions(banger.client, name)
        self.workspace = Workspace(banger.client, name)

    def __repr__(self) -> str:
        return f"VM({self.name!r})"

    def info(self) -> VMDetail:
        """Its details now: ``state``, ``ip``, ``image``, ``vcpus``, ``memory_mib``…"""
        return self.banger.client.show_vm(self.name)

    @property
    def state(self) -> str:
        return self.info().state

    # -- commands ----------------------------------------------------------------
    @overload
    def run(
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
    def run(
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

    def run(
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
        """Run ``command`` in the VM over bangerd's held connection (no new SSH handshake).

        ``command``: a **list is an argv**, run as is (no shell); a **string is a
        shell command**, run by ``sh -c`` in the guest (pipes, ``&&``, globs).
        ``timeout``: seconds, then the command's whole process group is killed
        (the result says ``timed_out``). ``stdin`` is sent, then closed.
        ``on_stdout``/``on_stderr`` get each line of output as it comes (newline
        removed), called on the SDK's exec thread; the output is collected in
        the result too. ``background=True`` returns a :class:`CommandHandle` at
        once (the command is running); otherwise this waits for the end.
        Interrupting the call (Ctrl-C) kills the command in the guest. Without
        ``cwd``/``user`` it runs in the image's WorkingDir as its User (a pulled
        OCI image's config, as ``docker exec``), else in ``/root`` as root.
        """
        request = common.exec_request(command, env=env, cwd=cwd, user=user, timeout=timeout)
        loop = self.banger.loop()
        if not background:
            # One hop onto the exec thread, not two (open, then drive): each hop is a
            # thread wake-up, which a loaded machine makes cost milliseconds.
            return loop.call(self._run_to_end(request, stdin, on_stdout, on_stderr))
        handle = loop.call(self.banger.client.open_exec(self.name, request))
        future = loop.submit(common.drive(handle, stdin, on_stdout, on_stderr))
        return CommandHandle(loop, handle, future)

    async def _run_to_end(
        self,
        request: dict[str, Any],
        stdin: bytes | None,
        on_stdout: OnLine | None,
        on_stderr: OnLine | None,
    ) -> CommandResult:
        handle = await self.banger.client.open_exec(self.name, request)
        return await common.drive(handle, stdin, on_stdout, on_stderr)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self.banger._needs_helper()
        common.follow(self.banger.client, self.banger.client.start_vm(self.name))

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the guest down (forced after ``timeout`` seconds); its disks stay."""
        common.follow(self.banger.client, self.banger.client.stop_vm(self.name, timeout))

    def restart(self) -> None:
        self.banger._needs_helper()
        common.follow(self.banger.client, self.banger.client.restart_vm(self.name))

    def delete(self, *, force: bool = False) -> None:
        """Remove the VM and its disks; a running one is shut down first.

        ``force`` (``banger vm rm --force``): no graceful shutdown, and a workspace
        transfer still running is cancelled instead of refused.
        """
        common.follow(self.banger.client, self.banger.client.delete_vm(self.name, force=force))

    def pause(self) -> None:
        common.follow(self.banger.client, self.banger.client.pause_vm(self.name))

    def resume(self) -> None:
        common.follow(self.banger.client, self.banger.client.resume_vm(self.name))

    def snapshot(self, name: str | None = None, *, stop: bool = False) -> dict[str, Any]:
        """Save the running VM (memory, devices, disks) as snapshot ``name``; its record.

        ``stop=True`` leaves the VM paused afterwards. ``banger vm create NEW
        --from-snapshot NAME`` continues the saved guest.
        """
        client = self.banger.client
        started = client.request(
            "POST", f"/v1/vms/{_segment(self.name)}/snapshots", json={"name": name, "stop": stop}
        )
        from banger.api_models import Operation

        common.follow(client, Operation.model_validate(started["operation"]))
        return dict(client.get_json(f"/v1/snapshots/{_segment(started['snapshot'])}"))


def _segment(value: str) -> str:
    from banger.client_files import path_segment

    return path_segment(value)


class CommandHandle:
    """A command running in the background (``vm.run(..., background=True)``)."""

    def __init__(
        self,
        loop: _LoopThread,
        handle: AsyncExec,
        future: concurrent.futures.Future[CommandResult],
    ) -> None:
        self._loop = loop
        self._handle = handle
        self._future = future

    @property
    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> CommandResult:
        """Its result once it ends; :class:`TimeoutError` if it runs past ``timeout`` seconds."""
        return _result(self._future, timeout)

    def signal(self, name: str) -> None:
        """Send SIG``name`` (``INT``, ``TERM``, ``KILL``…) to its process group in the guest."""
        if not self._future.done():
            self._loop.call(self._handle.signal(name))

    def kill(self, timeout: float | None = 60.0) -> CommandResult:
        """SIGKILL its process group and wait for the end (``signal == "KILL"``)."""
        self.signal("KILL")
        return self.wait(timeout)


class Files:
    """A VM's files over SFTP on bangerd's held connection (``vm.files``).

    Paths are absolute, or relative to the guest user's home (``/root``).
    Writes are atomic in the guest: a temporary file renamed into place.
    """

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm

    def read(self, path: str) -> bytes:
        out = io.BytesIO()
        self.client.read_file(self.vm, path, out)
        return out.getvalue()

    def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return self.read(path).decode(encoding)

    def write(
        self,
        path: str,
        data: bytes | str | IO[bytes],
        *,
        mode: int | None = None,
        parents: bool = False,
    ) -> GuestEntry:
        """Create or replace ``path`` (a str is written as UTF-8); ``parents``: mkdir -p first."""
        source = data.encode() if isinstance(data, str) else data
        return self.client.write_file(self.vm, path, source, mode=mode, parents=parents)

    def list(self, path: str) -> builtins.list[GuestEntry]:
        """Directory ``path``'s entries (``name``, ``type``, ``size``, ``mode``…), by name."""
        return self.client.list_files(self.vm, path)

    def stat(self, path: str) -> GuestEntry:
        return self.client.stat_file(self.vm, path)

    def exists(self, path: str) -> bool:
        try:
            self.client.stat_file(self.vm, path)
        except NotFound:
            return False
        return True

    def mkdir(self, path: str, *, parents: bool = True, mode: int | None = None) -> GuestEntry:
        return self.client.make_dir(self.vm, path, parents=parents, mode=mode)

    def remove(self, path: str, *, recursive: bool = False) -> None:
        self.client.remove_file(self.vm, path, recursive=recursive)

    def rename(self, source: str, dest: str, *, overwrite: bool = False) -> GuestEntry:
        return self.client.rename_file(self.vm, source, dest, overwrite=overwrite)


class Sessions:
    """Long-running commands under tmux in the guest, by name (``vm.sessions``)."""

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm

    def start(
        self,
        name: str,
        command: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Session:
        """Start ``command`` (a list is an argv; a string a shell command) detached."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        record = self.client.start_session(self.vm, argv, name=name, cwd=cwd, env=env)
        return Session(self.client, self.vm, str(record.get("name", name)))

    def get(self, name: str) -> Session:
        self.client.show_session(self.vm, name)
        return Session(self.client, self.vm, name)

    def list(self) -> builtins.list[Session]:
        return [
            Session(self.client, self.vm, str(record["name"]))
            for record in self.client.list_sessions(self.vm)
        ]


class Session:
    def __init__(self, client: BangerClient, vm: str, name: str) -> None:
        self.client = client
        self.vm = vm
        self.name = name

    def __repr__(self) -> str:
        return f"Session({self.vm!r}, {self.name!r})"

    def info(self) -> dict[str, Any]:
        """Its record: ``state`` (running, exited…), ``exit_code``, ``command``…"""
        return self.client.show_session(self.vm, self.name)

    def send(self, text: str, *, enter: bool = False) -> None:
        """Type ``text`` into its terminal (``"ls\\n"`` types Enter too; or ``enter=True``)."""
        self.client.send_to_session(self.vm, self.name, text, enter=enter)

    def logs(self, tail: int | None = None) -> str:
        """What it has written so far (``tail``: its last lines only)."""
        return common.session_text(self.client, self.vm, self.name, tail)

    def stop(self, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]:
        """SIG``signal``, then SIGKILL after ``timeout`` seconds; ``{outcome, session}``."""
        return self.client.stop_session(self.vm, self.name, signal=signal, timeout=timeout)

    def remove(self) -> None:
        """Forget an ended session (its record and its log in the guest)."""
        self.client.remove_session(self.vm, self.name)


class Workspace:
    """A host git repository copied into the VM, and the work brought back (``vm.workspace``)."""

    def __init__(self, client: BangerClient, vm: str) -> None:
        self.client = client
        self.vm = vm
        #: the host repository last prepared through this object (export's default)
        self.path: str | None = None

    def prepare(self, path: PathLike | None = None, *, dest: str | None = None) -> dict[str, Any]:
        """Copy the repository at ``path`` (default: the current directory's) into the VM.

        Tracked files, untracked ones that are not ignored, and ``.git``. The
        result: ``repo``, ``dest`` (the guest copy), ``files``, ``bytes``…
        """
        body: dict[str, Any] = {"path": common.host_path(path)}
        if dest is not None:
            body["dest"] = dest
        result = common.follow(self.client, self.client.workspace_prepare(self.vm, body))
        self.path = body["path"]
        return result

    def export(
        self,
        *,
        branch: str | None = None,
        path: PathLike | None = None,
        guest_path: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Bring the guest copy's work back as host branch ``branch`` (default ``banger/<vm>``).

        ``path``: the host repository (default: the one prepared, else the
        current directory's); ``force`` replaces an existing branch.
        """
        body: dict[str, Any] = {"path": common.host_path(path or self.path), "force": force}
        if branch is not None:
            body["branch"] = branch
        if guest_path is not None:
            body["guest_path"] = guest_path
        return common.follow(self.client, self.client.workspace_export(self.vm, body))
