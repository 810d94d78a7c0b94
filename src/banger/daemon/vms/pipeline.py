"""The start pipeline's stages, each a named operation step with an undo.

``create``:  resolve → record → root_disk → prepare_work_disk → [start]
``start``:   network → launch → wait_ssh → running

Every resource a stage takes is pushed on the :class:`UndoStack` with the
action that gives it back; the service unwinds the stack when a later stage
fails, so a failed create leaves nothing behind (row, disks, files, lease,
tap, process, known_hosts pins) and a failed start leaves a stopped VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from banger.config import Config
from banger.daemon.guestconn import KEEPALIVE_INTERVAL, GuestConns
from banger.daemon.hostnet import HostNetwork
from banger.daemon.ops import OpHandle
from banger.daemon.vms import agent_use
from banger.daemon.vms.live_sync import write_items
from banger.daemon.vms.undo import UndoStack
from banger.daemon.vms.vmm_choice import (
    DriverSet,
    driver_files,
    qemu_pvh_kernel,
)
from banger.daemon.vms.work_sync import staged_work_sync
from banger.disk.cow import (
    CowStrategy,
    DmSnapshot,
    HelperCall,
    RootDisk,
    choose_strategy,
    strategy_named,
)
from banger.disk.workdisk import (
    DirItem,
    FileSyncItem,
    HostKey,
    Provisioning,
    create_work_disk,
    provision_work_disk,
)
from banger.errors import BangerError
from banger.guest import sshkeys
from banger.guest.agent import AgentEndpoint
from banger.guest.boot_timeline import ConsoleWatch
from banger.guest.files import open_sftp
from banger.guest.ssh import SSHTarget, SSHTimeout, connect_when_ready, console_tail
from banger.images.publish import ImageEntry
from banger.kernels.store import KernelEntry
from banger.net.taps import tap_name
from banger.paths import Paths
from banger.rmtree import discard_tree_async
from banger.store import Launched, Store, VMConfig, VMRecord, VMState
from banger.vmm.base import Accelerator, Disk, LaunchSpec, VMMDriver, VMMProcess, stable_mac
from banger.vmm.bootargs import BootSpec, InitMode
from banger.vmm.qemu import QemuDriver

log = logging.getLogger(__name__)

#: The VMM's own stdout/stderr, next to the console log.
VMM_LOG_NAME = "vmm.log"


class BootFailed(BangerError):
    """The guest did not come up: the message carries the console's last lines."""

    http_status = 500


def launch_record(config: VMConfig, spec: LaunchSpec, proc: VMMProcess) -> VMConfig:
    """``config`` with what this launch (boot or restore) of ``spec`` started: the
    VMM process, and what the VMM runs with (``vm set`` changes the VM's record
    for its next start, not the process; a snapshot records these)."""
    return dataclasses.replace(
        config,
        vmm_process=proc.to_json(),
        accelerator=spec.accelerator,
        cmdline=spec.cmdline,
        root_disk=str(spec.root_disk.path),
        root_format=spec.root_disk.format,
        pvh_boot=spec.pvh_kernel is not None,
        agent_channel=spec.agent_socket is not None,
        launched=Launched(spec.vcpus, spec.memory_mib),
    )


#: Where the work disk is mounted in the guest.
GUEST_ROOT = "/root"


@dataclass(frozen=True)
class Accel:
    kind: Accelerator
    reason: str
    tsc_khz: int | None


@dataclass
class Pipeline:
    """The stages, bound to the daemon's collaborators."""

    paths: Paths
    config: Config
    store: Store
    hostnet: HostNetwork
    driver: QemuDriver
    accel: Accel
    boot_timeout: float
    boot_attempts: int = 2
    #: Every driver by name and the ``vmm`` choice for new VMs; None: QEMU (``driver``) only.
    drivers: DriverSet | None = None
    #: ``helper.call``: device-mapper root disks are made through it (None: never chosen).
    helper_call: HelperCall | None = None
    #: The kernel has device-mapper (probed once when bangerd starts).
    dm_usable: bool = False
    #: The held guest connections: wait_ssh's connection is kept here.
    conns: GuestConns = field(init=False)
    #: [[file_sync]] items a disk image cannot name, by VM id: copied once SSH answers
    late_sync: dict[str, tuple[tuple[DirItem, ...], tuple[FileSyncItem, ...]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        self.conns = GuestConns(self.paths.known_hosts, self.paths.ssh_key)

    def driver_for(self, vm: VMRecord) -> VMMDriver:
        """The driver the VM was created with (``vms.vmm``), whatever the config says now."""
        return self.drivers.get(vm.vmm) if self.drivers is not None else self.driver

    def agent_endpoint(self, vm: VMRecord) -> AgentEndpoint:
        """Where the VM's guest agent is reached, as its driver says (virtio-serial or vsock)."""
        return self.driver_for(vm).agent_endpoint(self.paths.vm_agent_socket(vm.id))

    # -- create ------------------------------------------------------------------
    async def root_disk(
        self, vm: VMRecord, image: ImageEntry, op: OpHandle, undo: UndoStack
    ) -> RootDisk:
        await op.stage("root_disk")
        vm_dir = self.paths.vm_dir(vm.id)
        await asyncio.to_thread(vm_dir.mkdir, 0o700, True)
        undo.push("vm directory", lambda: discard_tree_async(vm_dir))
        dm_usable = self.dm_usable and self.helper_call is not None
        jailed = self.config.firecracker.jailer
        strategy = self.strategy(
            choose_strategy(vm.vmm, self.paths.state_dir, dm_usable, jailed=jailed)
        )
        root = await asyncio.to_thread(strategy.create, image.rootfs, vm_dir)

        async def remove_root() -> None:
            await asyncio.to_thread(strategy.remove, root)

        undo.push("root disk", remove_root)
        await asyncio.to_thread(
            self.store.update_vm,
            vm.id,
            root_strategy=strategy.name,
            config=dataclasses.replace(vm.config, root_disk=str(root.path)),
        )
        await op.event("info", f"root disk: {strategy.name} view of image {image.name}")
        return root

    async def prepare_work_disk(
        self, vm: VMRecord, image: ImageEntry, op: OpHandle, undo: UndoStack
    ) -> None:
        await op.stage("prepare_work_disk")
        disk = self.paths.vm_work_disk(vm.id)
        await asyncio.to_thread(self._new_work_disk, image.work_seed, disk, vm.work_disk_size)

        async def remove_disk() -> None:
            await asyncio.to_thread(disk.unlink, True)

        undo.push("work disk", remove_disk)
        host = await asyncio.to_thread(
            sshkeys.generate_host_key, self.paths.vm_dir(vm.id), f"banger-{vm.name}"
        )
        await self._provision(disk, HostKey(host.private, host.public), op, vm.id)

    async def sync_work_disk(self, vm: VMRecord, op: OpHandle) -> None:
        """At every start: the keys, ``[[file_sync]]`` and the git identity again.

        Idempotent (files overwritten, the identity merged into what the disk
        holds). Only while the VM is stopped and its lock held: the disk is
        edited offline.
        """
        await op.stage("prepare_work_disk")
        private = self.paths.vm_host_key(vm.id)
        host_key = HostKey(private, private.with_name(private.name + ".pub"))
        await self._provision(self.paths.vm_work_disk(vm.id), host_key, op, vm.id)

    async def _provision(
        self, disk: Path, host_key: HostKey, op: OpHandle, vm_id: str | None = None
    ) -> None:
        """One debugfs batch: banger's key, the host key, .hushlogin, synced files."""
        owner = await asyncio.to_thread(sshkeys.ensure_owner_key, self.paths)
        async with staged_work_sync(self.config.file_sync, disk, op) as sync:
            if vm_id is not None:
                self.late_sync.pop(vm_id, None)
                if sync.late_dirs or sync.late_files:
                    self.late_sync[vm_id] = (sync.late_dirs, sync.late_files)
            provisioning = Provisioning(
                authorized_keys=owner.public_key,
                host_key=host_key,
                dirs=sync.dirs,
                files=sync.files,
                synced=sync.synced,
                git_identity=sync.git_identity,
            )
            await asyncio.to_thread(provision_work_disk, disk, provisioning)
        await op.event(
            "info",
            f"work disk provisioned: banger's key, per-VM host key, .hushlogin, {sync.summary}",
        )

    @staticmethod
    def _new_work_disk(seed: Path, disk: Path, size: int) -> None:
        """A writable copy of the seed, grown to ``size`` (never below the seed's own)."""
        create_work_disk(seed, disk, max(size, seed.stat().st_size))

    # -- start ---------------------------------------------------------------------
    async def network(
        self, vm: VMRecord, op: OpHandle, undo: UndoStack, *, detached: bool = False
    ) -> tuple[VMRecord, int]:
        """Lease (kept for the VM's life), bridge + NAT, the tap; returns its descriptor.

        ``detached``: the tap is on no bridge and down until the caller attaches it
        (a restored Firecracker guest, re-identified first: :mod:`.snapshot_restore`)."""
        await op.stage("network")
        subnet = self.config.network.subnet
        ip = await asyncio.to_thread(self.store.allocate_ip, vm.id, subnet)
        await self.hostnet.ensure()
        tap = tap_name(vm.id)

        async def delete_tap() -> None:
            await self.hostnet.delete_tap(tap)

        # Pushed first: a helper that dies after making the tap but before handing over
        # its descriptor leaves a tap this undo still removes (delete_tap is idempotent).
        undo.push(f"tap {tap}", delete_tap)
        fd = await self.hostnet.open_tap(tap, detached=detached)
        host_pub = await asyncio.to_thread(sshkeys.read_public_key, self.paths.vm_host_key(vm.id))
        names = [vm.name, str(ip)]
        await asyncio.to_thread(
            sshkeys.pin_host_key, self.paths.known_hosts, names, host_pub.public_key
        )
        vm = await asyncio.to_thread(
            self.store.update_vm, vm.id, tap=tap, mac=stable_mac(vm.id), state=VMState.STARTING
        )
        said = f"address {ip} on {self.hostnet.bridge}, tap {tap}"
        await op.event("info", said + (" (detached until re-identified)" if detached else ""))
        return vm, fd

    def launch_spec(
        self,
        vm: VMRecord,
        kernel: KernelEntry,
        root: Disk,
        tap_fd: int,
        restore: Callable[[LaunchSpec], LaunchSpec] | None = None,
    ) -> LaunchSpec:
        """The VM's driver-neutral spec (``restore`` changes it for a snapshot's
        machine), then adapted by the VM's driver."""
        net = self.config.network
        assert vm.ip is not None
        boot = BootSpec(
            ip=vm.ip,
            gateway=net.gateway,
            prefix=net.subnet.prefixlen,
            hostname=vm.name,
            dns=net.gateway,
            init_mode=_init_mode(vm.init_mode),
            # The host's TSC, for a guest under emulation; a driver that never emulates drops it.
            tsc_khz=self.accel.tsc_khz if self.accel.kind == "tcg" else None,
        )
        vm_dir = self.paths.vm_dir(vm.id)
        spec = LaunchSpec(
            vm_id=vm.id,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            kernel=kernel.kernel_path,
            # A kernel build kernel has every driver built in: never an initramfs.
            initrd=kernel.initrd_path if kernel.needs_initramfs else None,
            # The driver's adapt_spec writes it from ``boot``.
            cmdline="",
            boot=boot,
            root_disk=root,
            work_disk=self.paths.vm_work_disk(vm.id),
            console_log=self.paths.vm_console_log(vm.id),
            control_socket=self.paths.vm_qmp_socket(vm.id),
            vmm_log=vm_dir / VMM_LOG_NAME,
            mac=stable_mac(vm.id),
            tap_fd=tap_fd,
            accelerator=self.accel.kind,
            tap_name=vm.tap or tap_name(vm.id),
            pvh_kernel=qemu_pvh_kernel(kernel),
            agent_socket=self.paths.vm_agent_socket(vm.id),
        )
        if restore is not None:
            spec = restore(spec)
        files = driver_files(kernel, self.paths.vm_firecracker_socket(vm.id))
        return self.driver_for(vm).adapt_spec(spec, files)

    async def launch(
        self, vm: VMRecord, spec: LaunchSpec, op: OpHandle, undo: UndoStack
    ) -> VMMProcess:
        await op.stage("launch")
        if spec.accelerator == "tcg":
            await op.event("notice", f"using software emulation (TCG): {self.accel.reason}")
        driver = self.driver_for(vm)
        proc = await driver.launch(spec)

        async def kill() -> None:
            await driver.stop(proc, graceful_timeout=0)

        undo.push(f"VMM pid {proc.pid}", kill)
        await asyncio.to_thread(
            self.store.update_vm,
            vm.id,
            pid=proc.pid,
            pid_start_time=proc.start_time,
            config=launch_record(vm.config, spec, proc),
        )
        await op.event("info", f"{driver.name} started (pid {proc.pid}, {spec.accelerator})")
        return proc

    def ssh_target(self, vm: VMRecord) -> SSHTarget:
        assert vm.ip is not None
        return SSHTarget(str(vm.ip), self.paths.known_hosts, self.paths.ssh_key)

    async def _copy_late_sync(self, vm: VMRecord, op: OpHandle) -> None:
        """[[file_sync]] items whose names a disk image cannot hold (a ``"``, a newline…),
        over the held connection's SFTP now that the guest answers."""
        late = self.late_sync.pop(vm.id, None)
        if late is None:
            return
        dirs, files = late
        async with (
            self.conns.channel(vm, any_state=True) as conn,
            open_sftp(conn, vm.name) as guest,
        ):
            await write_items(guest, dirs, files, guest_root=GUEST_ROOT)
        count = len(files)
        await op.event(
            "info", f"file_sync: {count} file{'s' if count != 1 else ''} copied over SSH"
        )

    async def wait_ssh(self, vm: VMRecord, proc: VMMProcess, op: OpHandle) -> None:
        """SSH with the pinned key, or fail early when the VMM exits (panic, failed init)."""
        await op.stage("wait_ssh")
        console = self.paths.vm_console_log(vm.id)
        ready = asyncio.create_task(
            connect_when_ready(
                self.ssh_target(vm), self.boot_timeout, console, keepalive=KEEPALIVE_INTERVAL
            )
        )
        exited = asyncio.create_task(self.driver_for(vm).wait(proc, None))
        # The guest agent, when the VM has its channel: the first sign of life, often
        # before sshd listens; SSH still decides "running".
        current = await asyncio.to_thread(self.store.get_vm, vm.id)
        agent: asyncio.Task[float] | None = None
        if agent_use.has_channel(current.config):
            agent = asyncio.create_task(agent_use.first_answer(self.agent_endpoint(vm)))
        adopted = False
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not ready.cancelled() and ready.exception() is None:
                # The login that proved the guest answers is the one bangerd keeps.
                self.conns.adopt(vm, ready.result())
                adopted = True
                await self._copy_late_sync(vm, op)
                if agent is not None:
                    seen = agent.done() and not agent.cancelled() and agent.exception() is None
                    await op.event(
                        "info",
                        f"guest agent answered {agent.result():.2f}s into the wait"
                        if seen
                        else "guest agent not answering (SSH only)",
                    )
                    fresh = await asyncio.to_thread(self.store.get_vm, vm.id)
                    await asyncio.to_thread(
                        self.store.update_vm,
                        vm.id,
                        config=dataclasses.replace(fresh.config, agent_seen=seen),
                    )
                return
        finally:
            if agent is not None:
                agent.cancel()
                await asyncio.gather(agent, return_exceptions=True)
            for task in (ready, exited):
                if not task.done():
                    task.cancel()
            await asyncio.gather(ready, exited, return_exceptions=True)
            if not adopted and ready.done() and not ready.cancelled() and not ready.exception():
                ready.result().close()
        if exited.done() and not exited.cancelled() and exited.exception() is None:
            tail = await asyncio.to_thread(console_tail, console)
            raise BootFailed(
                f"the guest stopped before SSH answered; last console lines:\n{tail or '(none)'}",
                hint=f"full console log: {console}",
            )
        error = ready.exception()
        assert error is not None
        raise error

    async def boot(
        self, vm: VMRecord, kernel: KernelEntry, root: Disk, op: OpHandle, undo: UndoStack
    ) -> VMMProcess:
        """network → launch → wait_ssh, with one relaunch when SSH times out.

        The rare early-boot hang under TCG (TSC calibration) is worth one more try;
        a guest that powered itself off (bad kernel or init) is not.
        """
        await self.ensure_root_device(vm)
        vm, fd = await self.network(vm, op, undo)
        attempt = 1
        while True:
            # Where this boot's console output starts, and when: for its timeline.
            watch = ConsoleWatch.before_launch(self.paths.vm_console_log(vm.id))
            try:
                spec = self.launch_spec(vm, kernel, root, fd)
                if spec.tap_fd is None:
                    # Firecracker opens the persistent tap by name: a second open would be EBUSY.
                    os.close(fd)
                    fd = -1
                proc = await self.launch(vm, spec, op, undo)
            finally:
                if fd >= 0:
                    os.close(fd)
            try:
                async with watch:
                    await self.wait_ssh(vm, proc, op)
                await self._record_timeline(vm, watch)
                return proc
            except SSHTimeout as exc:
                if attempt >= self.boot_attempts:
                    raise
                attempt += 1
                await op.event("warning", f"no SSH yet ({exc.message.splitlines()[0]}); retrying")
                await self.driver_for(vm).stop(proc, graceful_timeout=0)
                fd = await self.hostnet.open_tap(tap_name(vm.id))

    async def _record_timeline(self, vm: VMRecord, watch: ConsoleWatch) -> None:
        """Keep the boot's phases in the VM's config (``vm logs --boot-timeline``)."""
        phases = tuple(phase.to_json() for phase in watch.timeline(time.time()))

        def update() -> None:
            fresh = self.store.get_vm(vm.id)
            self.store.update_vm(
                vm.id, config=dataclasses.replace(fresh.config, boot_timeline=phases)
            )

        # A report about the boot must not fail the boot: the guest answers already.
        try:
            await asyncio.to_thread(update)
        except (BangerError, OSError) as exc:
            log.warning("VM %s: boot timeline not recorded: %s", vm.name, exc)

    # -- stop ---------------------------------------------------------------------
    async def guest_poweroff(self, vm: VMRecord) -> None:
        """Ask the guest to power off over SSH; the connection dying under us is success."""
        command = (
            ["/sbin/banger-fast-init", "poweroff"]
            if vm.init_mode == "fast"
            else ["systemctl", "poweroff", "--no-block"]
        )
        with contextlib.suppress(BangerError, OSError, TimeoutError):
            async with asyncio.timeout(20):
                await self.conns.run(vm, command, timeout=10, any_state=True)  # held: no handshake

    def strategy(self, strategy: CowStrategy | str) -> CowStrategy:
        """``strategy`` (or the one of that name), bound to the helper when it needs it."""
        if isinstance(strategy, str):
            strategy = strategy_named(strategy)
        if isinstance(strategy, DmSnapshot) and self.helper_call is not None:
            return strategy.bound(self.helper_call)
        return strategy

    async def ensure_root_device(self, vm: VMRecord) -> None:
        """A dm-snapshot root disk is a device, gone after a host reboot: made again
        over the VM's cow file (a persistent snapshot: the VM's writes come back)."""
        if vm.root_strategy != DmSnapshot.name or vm.image_id is None:
            return
        device = self.root_disk_of(vm).path
        if await asyncio.to_thread(device.exists):
            return
        rootfs = self.paths.image_dir(vm.image_id) / "rootfs.ext4"
        strategy = self.strategy(DmSnapshot.name)
        await asyncio.to_thread(strategy.create, rootfs, self.paths.vm_dir(vm.id))

    def root_disk_of(self, vm: VMRecord) -> Disk:
        path = Path(vm.config.root_disk or self._default_root(vm))
        if path.suffix == ".qcow2":
            return Disk(path, "qcow2", "writeback")
        return Disk(path, "raw", "writeback")

    def _default_root(self, vm: VMRecord) -> Path:
        strategy = strategy_named(vm.root_strategy or "qcow2")
        suffix = "qcow2" if strategy.name == "qcow2" else "ext4"
        return self.paths.vm_root_disk(vm.id, suffix)


def _init_mode(value: str) -> InitMode:
    return "fast" if value == "fast" else "systemd"
