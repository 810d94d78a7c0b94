"""The QEMU ``microvm`` driver.

:func:`qemu_argv` is a pure builder, tested without QEMU. :class:`QemuDriver`
spawns QEMU as a supervised child (never ``-daemonize``) in its own session, so
a Ctrl-C aimed at the daemon does not reach the guests, and controls it over
QMP afterwards.

Descriptors handed to QEMU (libvirt's model): the tap arrives as an open file
descriptor from the root helper (``/dev/net/tun`` is root-only here), and the
QMP socket is bound by banger itself and passed listening, so there is no
start-up race to poll for: a ``connect()`` succeeds at once and the greeting
arrives as soon as QEMU's main loop runs. In the child they are always fd 3
(tap) and fd 4 (QMP), which keeps the argv deterministic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from banger.errors import Conflict
from banger.guest.agent import PORT_NAME as AGENT_PORT_NAME
from banger.guest.agent import AgentEndpoint
from banger.paths import check_socket_path
from banger.procinfo import send_signal
from banger.vmm.base import (
    Disk,
    DriverFiles,
    LaunchSpec,
    StopResult,
    VMMCapabilities,
    VMMError,
    VMMProcess,
    VMMStatus,
    VMState,
)
from banger.vmm.bootargs import kernel_cmdline
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
from banger.vmm.qmp import QMPClient, QMPError

log = logging.getLogger(__name__)

QEMU_BINARY = "qemu-system-x86_64"
#: Descriptor numbers inside the QEMU process.
TAP_FD = 3
QMP_FD = 4
#: QMP ``query-status`` values that mean "not executing guest code, but resumable".
_PAUSED = {"paused", "prelaunch", "suspended", "inmigrate", "postmigrate", "finish-migrate"}


def _drive(drive_id: str, disk: Disk) -> list[str]:
    options = [
        f"id={drive_id}",
        f"file={disk.path}",
        f"format={disk.format}",
        "if=none",
        f"cache={disk.cache}",
        "discard=unmap",
    ]
    if disk.read_only:
        options.append("readonly=on")
    return ["-drive", ",".join(options), "-device", f"virtio-blk-device,drive={drive_id}"]


def boot_image(spec: LaunchSpec) -> Path:
    """The kernel file QEMU loads: the PVH ``vmlinux`` when the spec has one, else ``kernel``.

    microvm boots an ELF through its PVH entry (the ``pvh.bin`` option ROM) and a
    bzImage through ``linuxboot_dma.bin``; either takes the same ``-initrd`` and
    ``-append``.
    """
    return spec.pvh_kernel if spec.pvh_kernel is not None else spec.kernel


def adapt_spec(spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
    """The daemon's neutral ``spec`` as QEMU launches it.

    Everything but the command line is kept as it is: the helper's tap descriptor
    (which :func:`qemu_argv` prefers to the name), QMP, and the PVH ``vmlinux``
    when the daemon found one (else the bzImage). The guest's line is the common
    contract with no token of QEMU's own; the host TSC frequency stays on it only
    when the guest runs under TCG. A spec without ``boot`` (a restore's saved
    line, or one built by hand) is returned unchanged.
    """
    if spec.boot is None:
        return spec
    boot = spec.boot
    if spec.accelerator != "tcg":
        boot = dataclasses.replace(boot, tsc_khz=None)
    return dataclasses.replace(spec, cmdline=kernel_cmdline(boot), boot=None)


def qemu_argv(spec: LaunchSpec, binary: str = QEMU_BINARY) -> list[str]:
    """The QEMU command line for ``spec`` (validated first)."""
    spec.validate()
    if spec.accelerator == "kvm":
        accel = ["-accel", "kvm", "-cpu", "host"]
    else:
        # tb-size=64: the default 1 GiB translation cache doubles host memory per guest.
        accel = ["-accel", "tcg,tb-size=64", "-cpu", "max"]
    argv = [
        binary,
        "-name", f"{spec.vm_id},process=banger-{spec.vm_id}",
        "-M", "microvm",
        *accel,
        "-m", str(spec.memory_mib),
        "-smp", str(spec.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-chardev", f"file,id=con,path={spec.console_log},append=on",
        "-serial", "chardev:con",
        "-chardev", f"socket,id=qmp,fd={QMP_FD},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-kernel", str(boot_image(spec)),
    ]  # fmt: skip
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    argv += ["-append", spec.cmdline]
    # The root disk is attached first so the guest sees it as /dev/vda, the work disk as vdb.
    argv += _drive("root", spec.root_disk)
    if spec.work_disk is not None:
        argv += _drive("work", Disk(spec.work_disk, "raw", "writeback"))
    if spec.tap_fd is not None:
        argv += ["-netdev", f"tap,id=n0,fd={TAP_FD}"]
    elif spec.tap_name is not None:
        argv += ["-netdev", f"tap,id=n0,ifname={spec.tap_name},script=no,downscript=no"]
    if spec.tap_fd is not None or spec.tap_name is not None:
        argv += ["-device", f"virtio-net-device,netdev=n0,mac={spec.mac}"]
    if spec.agent_socket is not None:
        # Last, so the other devices keep their virtio-mmio slots. QEMU listens on
        # the socket itself (one client at a time, wait=off: the guest runs without one).
        argv += [
            "-device", "virtio-serial-device",
            "-chardev", f"socket,id=qga0,path={spec.agent_socket},server=on,wait=off",
            "-device", f"virtserialport,chardev=qga0,name={AGENT_PORT_NAME}",
        ]  # fmt: skip
    return argv


def _bind_listening(path: Path) -> socket.socket:
    check_socket_path(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.listen(4)
    except BaseException:
        sock.close()
        raise
    return sock


class QemuDriver:
    """Launch and control QEMU ``microvm`` guests."""

    def __init__(
        self,
        binary: str = QEMU_BINARY,
        *,
        start_timeout: float = 30.0,
        control_timeout: float = 5.0,
        quit_timeout: float = 5.0,
    ) -> None:
        self.binary = binary
        self.start_timeout = start_timeout
        self.control_timeout = control_timeout
        self.quit_timeout = quit_timeout

    @property
    def name(self) -> str:
        return "qemu"

    @property
    def capabilities(self) -> VMMCapabilities:
        return VMMCapabilities(
            pause=True,
            snapshot=True,
            qcow2=True,
            tap_by_fd=True,
            graceful_stop=True,
            accelerators=("kvm", "tcg"),
        )

    def adapt_spec(self, spec: LaunchSpec, files: DriverFiles) -> LaunchSpec:
        return adapt_spec(spec, files)

    def agent_endpoint(self, path: Path) -> AgentEndpoint:
        """The agent socket is the host end of the virtio-serial port itself."""
        return AgentEndpoint(path)

    async def launch(self, spec: LaunchSpec, extra_args: Sequence[str] = ()) -> VMMProcess:
        """Start QEMU for ``spec``; ``extra_args`` go last (``-incoming`` for a restore)."""
        argv = [*qemu_argv(spec, self.binary), *extra_args]
        exe = shutil.which(self.binary)
        if exe is None:
            raise VMMError(
                f"QEMU not found: {self.binary}", hint="install qemu-system-x86 (banger doctor)"
            )
        spec.console_log.touch(mode=0o600)
        listener = _bind_listening(spec.control_socket)
        owned: list[int] = []
        try:
            log_fd = os.open(spec.vmm_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            owned.append(log_fd)
            log_offset = os.fstat(log_fd).st_size
            devnull = os.open(os.devnull, os.O_RDONLY)
            owned.append(devnull)
            fds = [(devnull, 0), (log_fd, 1), (log_fd, 2), (listener.fileno(), QMP_FD)]
            if spec.tap_fd is not None:
                fds.append((spec.tap_fd, TAP_FD))
            log.debug("launching VM %s: %s", spec.vm_id, argv)
            pid = spawn_in_session(exe, argv, fds, "QEMU")
        finally:
            for fd in owned:
                os.close(fd)
            # QEMU holds its own copy of the listening socket now.
            listener.close()
        start_time = start_time_of_child(pid, "QEMU", spec.vm_id)
        proc = VMMProcess(self.name, spec.vm_id, pid, start_time, spec.control_socket, tuple(argv))
        try:
            await self._await_qmp(proc, spec.vmm_log, log_offset)
        except BaseException:
            send_signal(pid, start_time, signal.SIGKILL)
            await self.wait(proc, self.quit_timeout)
            raise
        return proc

    async def _await_qmp(self, proc: VMMProcess, vmm_log: Path, log_offset: int) -> None:
        """Wait for QEMU's greeting, or its early death (then raise with its stderr tail)."""
        try:
            # If the socket fails, a dying QEMU gets 2 s to finish dying, to be reported as such.
            await ready_or_exit(
                QMPClient.connect(proc.control_socket, self.start_timeout),
                proc.pid,
                grace=2.0,
                discard=QMPClient.close,
            )
        except EarlyExit as exc:
            how = f"exit status {exc.exit_code}" if exc.status is not None else "exited"
            tail = log_tail(vmm_log, log_offset)
            raise VMMError(
                f"QEMU for VM {proc.vm_id} failed to start ({how}): {tail or 'no output'}",
                hint=f"see {vmm_log}",
            ) from None
        except Exception as error:
            raise VMMError(
                f"QEMU for VM {proc.vm_id} did not answer on {proc.control_socket}: {error}",
                hint=f"see {vmm_log}",
            ) from None

    async def wait(self, proc: VMMProcess, timeout: float | None) -> bool:
        return await wait_reaped(proc, timeout)

    async def _execute(self, proc: VMMProcess, *commands: str) -> list[object]:
        async with await QMPClient.connect(proc.control_socket, self.control_timeout) as qmp:
            return [await qmp.execute(command) for command in commands]

    async def stop(self, proc: VMMProcess, graceful_timeout: float) -> StopResult:
        started = time.monotonic()

        def result(method: str) -> StopResult:
            return StopResult(method, time.monotonic() - started)  # type: ignore[arg-type]

        if not is_alive(proc):
            return result("already-exited")
        # QMP answering is what makes the polite steps worth waiting for; a hung QEMU
        # (no answer within control_timeout) goes straight to SIGKILL.
        responsive = True
        if graceful_timeout > 0:
            try:
                async with await QMPClient.connect(
                    proc.control_socket, self.control_timeout
                ) as qmp:
                    status = await qmp.execute("query-status")
                    if isinstance(status, dict) and status.get("status") in _PAUSED:
                        await qmp.execute("cont")  # a paused guest cannot act on the button
                    # ACPI power button (microvm's GED device); systemd-logind powers off.
                    await qmp.execute("system_powerdown")
            except QMPError as exc:
                log.warning("VM %s: graceful stop request failed: %s", proc.vm_id, exc)
                responsive = False
            if responsive and await self.wait(proc, graceful_timeout):
                return result("graceful")
        if responsive:
            try:
                await self._execute(proc, "quit")
            except QMPError as exc:
                log.warning("VM %s: QMP quit failed: %s", proc.vm_id, exc)
            else:
                if await self.wait(proc, self.quit_timeout):
                    return result("quit")
        await kill(proc, self.quit_timeout, "QEMU")
        return result("killed")

    async def status(self, proc: VMMProcess) -> VMMStatus:
        if not is_alive(proc):
            return VMMStatus(VMState.EXITED)
        try:
            (reply,) = await self._execute(proc, "query-status")
        except QMPError as exc:
            return VMMStatus(VMState.UNRESPONSIVE, str(exc))
        detail = str(reply.get("status", "")) if isinstance(reply, dict) else ""
        if detail == "running":
            return VMMStatus(VMState.RUNNING, detail)
        if detail in _PAUSED:
            return VMMStatus(VMState.PAUSED, detail)
        return VMMStatus(VMState.OTHER, detail)

    async def _control(self, proc: VMMProcess, command: str) -> None:
        if not is_alive(proc):
            raise Conflict(f"VM {proc.vm_id} is not running (its QEMU process has exited)")
        await self._execute(proc, command)

    async def pause(self, proc: VMMProcess) -> None:
        await self._control(proc, "stop")

    async def resume(self, proc: VMMProcess) -> None:
        await self._control(proc, "cont")

    # -- snapshots (banger.vmm.qemu_snapshot) ---------------------------------------

    async def snapshot(self, proc: VMMProcess, state_file: Path, *, resume: bool = True) -> bool:
        """Pause the guest and save its state to ``state_file``; returns whether it ran.

        With ``resume`` false the guest stays paused (its disks flushed and
        inactive) so the caller can copy them; ``resume()`` continues it.
        """
        from banger.vmm.qemu_snapshot import save_state

        if not is_alive(proc):
            raise Conflict(f"VM {proc.vm_id} is not running (its QEMU process has exited)")
        async with await QMPClient.connect(proc.control_socket, self.control_timeout) as qmp:
            was_running = await save_state(qmp, state_file)
            if was_running and resume:
                await qmp.execute("cont")
        return was_running

    async def restore(
        self, spec: LaunchSpec, state_file: Path, *, link_down: bool = False
    ) -> VMMProcess:
        """A new QEMU for ``spec`` running the guest saved in ``state_file``.

        ``link_down``: the NIC's link is down when the guest continues (it is
        re-identified first: daemon/vms/reident.py).
        """
        from banger.vmm.qemu_snapshot import INCOMING_ARGS, load_state, set_link

        proc = await self.launch(spec, INCOMING_ARGS)
        try:
            async with await QMPClient.connect(proc.control_socket, self.control_timeout) as qmp:
                await load_state(qmp, state_file)
                if link_down:
                    await qmp.execute(*set_link(False))
                await qmp.execute("cont")
        except BaseException:
            send_signal(proc.pid, proc.start_time, signal.SIGKILL)
            await self.wait(proc, self.quit_timeout)
            raise
        return proc
