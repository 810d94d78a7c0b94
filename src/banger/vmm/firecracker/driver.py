"""The Firecracker driver: one supervised ``firecracker`` process per VM.

Launch: unlink a stale API socket (a leftover one makes Firecracker exit 1),
spawn Firecracker in its own session with stdin ``/dev/null``, its stdout (the
guest's serial console) appended straight to ``console.log`` and its stderr to
the VMM log, then retry ``connect()`` on the API socket with a bounded backoff
while watching for an early exit, and send the configuration requests built by
:mod:`banger.vmm.firecracker.plan`.

The console goes to a file, not a pipe the daemon drains: a regular file never
blocks (Firecracker makes stdout non-blocking and drops what a full pipe will
not take), nothing runs in the daemon's event loop for it, and the console keeps
being written after a daemon restart, when a pipe would have lost its reader.

Stop: ``SendCtrlAltDel`` (the guest reboots, ``reboot=k`` resets through the
i8042, Firecracker exits 0), a bounded wait, then SIGKILL; Firecracker has no
SIGTERM handler, so there is no softer signal worth sending.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import shutil
import signal
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from banger.errors import Conflict, InvalidArgument
from banger.guest.agent import VSOCK_PORT, AgentEndpoint
from banger.paths import check_socket_path
from banger.procinfo import reap, send_signal, wait_for_exit
from banger.vmm.base import (
    DriverFiles,
    LaunchSpec,
    StopResult,
    VMMCapabilities,
    VMMError,
    VMMProcess,
    VMMStatus,
    VMState,
)
from banger.vmm.firecracker import models
from banger.vmm.firecracker.api import FirecrackerClient, FirecrackerError
from banger.vmm.firecracker.bootargs import firecracker_cmdline
from banger.vmm.firecracker.exitcodes import exit_reason
from banger.vmm.firecracker.models import ApiRequest
from banger.vmm.firecracker.plan import (
    DEFAULT_OPTIONS,
    FirecrackerOptions,
    SnapshotFiles,
    VMFiles,
    boot_requests,
    restore_requests,
    snapshot_requests,
)
from banger.vmm.process import (
    EarlyExit,
    is_alive,
    kill,
    log_tail,
    ready_or_exit,
    spawn_in_session,
    start_time_of_child,
    wait_reaped,
)

log = logging.getLogger(__name__)

FIRECRACKER_BINARY = "firecracker"


def instance_id(vm_id: str) -> str:
    """Firecracker's ``--id`` allows letters, digits and '-' (banger ids may also hold '_')."""
    return vm_id.replace("_", "-")


def firecracker_argv(binary: str, spec: LaunchSpec) -> list[str]:
    """The command line: everything else arrives over the API socket."""
    return [binary, "--api-sock", str(spec.control_socket), "--id", instance_id(spec.vm_id)]


def check_spec(spec: LaunchSpec) -> None:
    """What Firecracker cannot do that QEMU can, refused before anything starts."""
    spec.validate()
    if spec.tap_fd is not None:
        raise InvalidArgument(
            "tap_fd: Firecracker opens its tap by name (host_dev_name), not as a descriptor",
            hint="pass tap_name; the owner needs /dev/net/tun access, or use jailer mode",
        )
    if spec.accelerator != "kvm":
        raise InvalidArgument(
            "accelerator: Firecracker needs KVM; software emulation is QEMU only",
            hint="set vmm = 'qemu' (or 'auto') on hosts without usable KVM",
        )


def adapt_spec(spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
    """The daemon's neutral ``spec`` as Firecracker (plain or jailed) launches it.

    - the tap: Firecracker opens the (persistent, owner-owned) tap by name, so the
      descriptor is dropped (the daemon closes it) and only the name is passed;
    - the kernel: the entry's uncompressed ``vmlinux``, never a bzImage or PVH image;
    - the accelerator: KVM only, and its own API socket;
    - the agent channel: ``agent_socket`` becomes the vsock device's ``uds_path``
      (Firecracker's hybrid vsock; :meth:`FirecrackerDriver.agent_endpoint`);
    - the command line: the guest contract with ``reboot=k``
      (:func:`~banger.vmm.firecracker.bootargs.firecracker_cmdline`), never a TSC
      frequency (KVM only); a spec without ``boot`` keeps its ``cmdline``.
    """
    if files.vmlinux is None:
        raise InvalidArgument(
            f"kernel: {files.kernel_name} cannot boot under Firecracker: {files.no_vmlinux}",
            hint="pull or import the kernel again (banger extracts a vmlinux now), "
            "or create the VM with vmm = 'qemu'",
        )
    return dataclasses.replace(
        spec,
        kernel=files.vmlinux,
        pvh_kernel=None,
        tap_fd=None,
        accelerator="kvm",
        control_socket=files.api_socket,
        cmdline=spec.cmdline if spec.boot is None else firecracker_cmdline(spec.boot),
        boot=None,
    )


def agent_endpoint(uds_path: Path) -> AgentEndpoint:
    """The guest agent of a Firecracker VM (plain or jailed) whose vsock is at ``uds_path``."""
    return AgentEndpoint(uds_path, VSOCK_PORT)


def unlink_stale_socket(path: Path, what: str = "control socket") -> None:
    """Remove a leftover socket; refuse to remove anything that is not a socket."""
    check_socket_path(path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise VMMError(f"{what} path {path} exists and is not a socket")
    path.unlink()


async def wait_for_socket(path: Path, timeout: float) -> None:
    """Retry ``connect()`` until Firecracker listens (it binds the socket itself).

    Bounded exponential backoff, 5 ms up to 100 ms: Firecracker is typically
    listening within ~12 ms, so the first retries are the ones that matter.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, str(path))
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
                raise VMMError(f"cannot connect to {path}: {exc.strerror}") from None
        finally:
            sock.close()
        if time.monotonic() + delay > deadline:
            raise VMMError(f"Firecracker API socket {path} did not appear within {timeout:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def _fresh_file(path: Path) -> None:
    """Firecracker writes its log from offset 0 (no O_APPEND): start each run empty."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.close(fd)


class FirecrackerDriver:
    """Launch and control Firecracker microVMs (KVM only)."""

    def __init__(
        self,
        binary: str = FIRECRACKER_BINARY,
        *,
        options: FirecrackerOptions = DEFAULT_OPTIONS,
        start_timeout: float = 10.0,
        control_timeout: float = 5.0,
        kill_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self.options = options
        self.start_timeout = start_timeout
        self.control_timeout = control_timeout
        self.kill_timeout = kill_timeout

    @property
    def name(self) -> str:
        return "firecracker"

    @property
    def capabilities(self) -> VMMCapabilities:
        return VMMCapabilities(
            pause=True,
            snapshot=True,
            qcow2=False,
            tap_by_fd=False,
            graceful_stop=True,
            accelerators=("kvm",),
        )

    def adapt_spec(self, spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
        return adapt_spec(spec, files)

    def agent_endpoint(self, path: Path) -> AgentEndpoint:
        """``path`` is the vsock device's ``uds_path``: ``CONNECT`` to the guest's
        agent port (:data:`~banger.guest.agent.VSOCK_PORT`, where image finalize's
        ``banger-agent-vsock`` runs ``qemu-ga -m vsock-listen``)."""
        return agent_endpoint(path)

    # -- launch ------------------------------------------------------------------

    async def launch(self, spec: LaunchSpec) -> VMMProcess:
        check_spec(spec)
        files = VMFiles.for_spec(spec)
        return await self._start(spec, files, boot_requests(spec, files, self.options))

    async def restore(self, spec: LaunchSpec, snapshot: SnapshotFiles) -> VMMProcess:
        """A new Firecracker process running ``snapshot``, on ``spec``'s tap and socket."""
        check_spec(spec)
        files = VMFiles.for_spec(spec)
        return await self._start(spec, files, restore_requests(spec, files, snapshot, self.options))

    async def _start(
        self, spec: LaunchSpec, files: VMFiles, requests: Sequence[ApiRequest]
    ) -> VMMProcess:
        exe = shutil.which(self.binary)
        if exe is None:
            raise VMMError(
                f"Firecracker not found: {self.binary}",
                hint="install Firecracker, or set vmm = 'qemu' (banger doctor)",
            )
        unlink_stale_socket(spec.control_socket)
        if spec.agent_socket is not None:
            # Firecracker binds the vsock's uds_path itself and fails on a leftover.
            unlink_stale_socket(spec.agent_socket, "agent (vsock) socket")
        for path in (files.log, files.metrics):
            _fresh_file(path)
        argv = firecracker_argv(exe, spec)
        pid, log_offset = self._spawn(exe, argv, spec)
        start_time = start_time_of_child(pid, "Firecracker", spec.vm_id)
        proc = VMMProcess(self.name, spec.vm_id, pid, start_time, spec.control_socket, tuple(argv))
        try:
            await self._await_api(proc, spec.vmm_log, log_offset)
            async with FirecrackerClient(proc.control_socket, timeout=self.control_timeout) as api:
                for request in requests:
                    await api.send(request)
        except BaseException as exc:
            send_signal(pid, start_time, signal.SIGKILL)
            await wait_for_exit(pid, self.kill_timeout, start_time)
            status = reap(pid)
            if isinstance(exc, FirecrackerError):
                raise FirecrackerError(
                    exc.endpoint,
                    f"{exc.message.partition(': ')[2]} (VM {spec.vm_id} not started)",
                    status=exc.status,
                    fault_message=exc.fault_message,
                    hint=f"see {spec.vmm_log} and {files.log}",
                ) from None
            if isinstance(exc, VMMError) and status is not None:
                how = exit_reason(os.waitstatus_to_exitcode(status))
                tail = log_tail(spec.vmm_log, log_offset)
                raise VMMError(
                    f"Firecracker for VM {spec.vm_id} {how}: {tail or 'no output'}",
                    hint=f"see {spec.vmm_log}",
                ) from None
            raise
        return proc

    def _spawn(self, exe: str, argv: list[str], spec: LaunchSpec) -> tuple[int, int]:
        owned: list[int] = []
        try:
            devnull = os.open(os.devnull, os.O_RDONLY)
            owned.append(devnull)
            console = os.open(spec.console_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            owned.append(console)
            vmm_log = os.open(spec.vmm_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            owned.append(vmm_log)
            log_offset = os.fstat(vmm_log).st_size
            fds = [(devnull, 0), (console, 1), (vmm_log, 2)]
            log.debug("launching VM %s: %s", spec.vm_id, argv)
            pid = spawn_in_session(exe, argv, fds, "Firecracker")
        finally:
            for fd in owned:
                os.close(fd)
        return pid, log_offset

    async def _await_api(self, proc: VMMProcess, vmm_log: Path, log_offset: int) -> None:
        """The API socket answering, or an early exit reported with its reason."""
        try:
            # If the socket never comes (or fails), the process may be about to exit.
            await ready_or_exit(
                wait_for_socket(proc.control_socket, self.start_timeout), proc.pid, grace=1.0
            )
        except EarlyExit as exc:
            how = exit_reason(exc.exit_code)
            tail = log_tail(vmm_log, log_offset)
            raise VMMError(
                f"Firecracker for VM {proc.vm_id} {how}: {tail or 'no output'}",
                hint=f"see {vmm_log}",
            ) from None

    # -- control -------------------------------------------------------------------

    def _client(self, proc: VMMProcess) -> FirecrackerClient:
        return FirecrackerClient(proc.control_socket, timeout=self.control_timeout)

    def _require_alive(self, proc: VMMProcess) -> None:
        if not is_alive(proc):
            raise Conflict(f"VM {proc.vm_id} is not running (its Firecracker process has exited)")

    async def wait(self, proc: VMMProcess, timeout: float | None) -> bool:
        return await wait_reaped(proc, timeout)

    async def instance_state(self, proc: VMMProcess) -> str:
        """Firecracker's own state: ``Not started``, ``Running`` or ``Paused``."""
        async with self._client(proc) as api:
            info = await api.send(models.describe_instance())
        return str(info.get("state", "")) if isinstance(info, dict) else ""

    async def status(self, proc: VMMProcess) -> VMMStatus:
        if not is_alive(proc):
            return VMMStatus(VMState.EXITED)
        try:
            detail = await self.instance_state(proc)
        except FirecrackerError as exc:
            return VMMStatus(VMState.UNRESPONSIVE, str(exc))
        if detail == "Running":
            return VMMStatus(VMState.RUNNING, detail)
        if detail == "Paused":
            return VMMStatus(VMState.PAUSED, detail)
        return VMMStatus(VMState.OTHER, detail)

    async def pause(self, proc: VMMProcess) -> None:
        self._require_alive(proc)
        async with self._client(proc) as api:
            await api.send(models.vm_state("Paused"))

    async def resume(self, proc: VMMProcess) -> None:
        self._require_alive(proc)
        async with self._client(proc) as api:
            await api.send(models.vm_state("Resumed"))

    async def snapshot(
        self, proc: VMMProcess, files: SnapshotFiles, *, resume: bool = True
    ) -> None:
        """Write a full snapshot (state + memory). Disks are not included: copy them too.

        The VM is paused for the snapshot (Firecracker requires it) and resumed
        afterwards if it was running and ``resume`` is set.
        """
        self._require_alive(proc)
        async with self._client(proc) as api:
            info = await api.send(models.describe_instance())
            was_running = isinstance(info, dict) and info.get("state") == "Running"
            for request in snapshot_requests(files):
                await api.send(request)
            if was_running and resume:
                await api.send(models.vm_state("Resumed"))

    async def stop(self, proc: VMMProcess, graceful_timeout: float) -> StopResult:
        started = time.monotonic()

        def result(method: str) -> StopResult:
            return StopResult(method, time.monotonic() - started)  # type: ignore[arg-type]

        if not is_alive(proc):
            return result("already-exited")
        if (
            graceful_timeout > 0
            and await self._ask_guest_to_stop(proc)
            and await self.wait(proc, graceful_timeout)
        ):
            return result("graceful")
        await kill(proc, self.kill_timeout, "Firecracker")
        return result("killed")

    async def _ask_guest_to_stop(self, proc: VMMProcess) -> bool:
        """Send Ctrl-Alt-Del (resuming a paused guest first); False when that cannot work."""
        try:
            async with self._client(proc) as api:
                info = await api.send(models.describe_instance())
                state = info.get("state") if isinstance(info, dict) else None
                if state == "Not started":
                    return False  # SendCtrlAltDel is post-boot only; nothing to shut down
                if state == "Paused":
                    await api.send(models.vm_state("Resumed"))
                await api.send(models.action("SendCtrlAltDel"))
        except FirecrackerError as exc:
            log.warning("VM %s: graceful stop request failed: %s", proc.vm_id, exc)
            return False
        return True
