"""``banger vm snapshot`` / ``snapshots`` / ``snapshot-rm``: save a running VM whole.

A snapshot is the guest's memory and device state plus copies of its disks
and its sshd host key, taken while the guest is paused (consistent: nothing
runs while the disks are copied), then the guest resumes — or stays paused
with ``stop``. Restoring it into a new VM is :mod:`.snapshot_restore`.

Per driver:

- QEMU: QMP ``migrate`` to a descriptor passed over the QMP socket
  (:mod:`banger.vmm.qemu_snapshot`); the root disk is the qcow2 overlay, copied
  with its reference to the image's rootfs (the image is then pinned by the
  snapshot row).
- Firecracker (plain): ``PATCH /vm Paused`` → ``PUT /snapshot/create`` (Full)
  → disk copies → resume. The state file records each disk's host path; see
  :func:`.snapshot_files.links_at` for how a restore satisfies that.
- Firecracker under the jailer: refused for now. The snapshot would be written
  inside the jail, and a restore needs the helper's ``start_jailer`` op to link
  the state and memory files into the new jail, which it does not do yet.

Runs as a ``vm.snapshot`` operation holding the VM's lock, like every other
change to a VM.

A failure at any step leaves the VM as it was (resumed if it ran, thawed) and
keeps nothing: the temp directory is removed, no record is written. A full
snapshot filesystem — QEMU's ``Unable to write to file: No space left on
device``, ``cp``'s or Python's ENOSPC — is one :class:`~banger.diskfull.DiskFull`
line naming the directory, the step, what a snapshot of the VM needs and what
is free (``vm fork`` says the same: its first step is this one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.vms import agent_use
from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.names import check_name
from banger.daemon.vms.service import VMService
from banger.daemon.vms.vmm_choice import AGENT_CHANNEL_KEY, PVH_BOOT_KEY
from banger.diskfull import DiskFull, disk_full_is_said, free_bytes, mount_point
from banger.errors import BangerError, Conflict
from banger.guest.agent import AgentError
from banger.rmtree import discard_tree
from banger.store import SnapshotRecord, VMRecord, VMState, new_id
from banger.vmm.base import VMMDriver, VMMProcess
from banger.vmm.base import VMState as VMMState

#: ``snapshot.json`` / API shape version.
FORMAT = 1
#: Meta keys: whether the filesystems were frozen; whether the source's agent had answered.
FROZEN_KEY = "frozen"
AGENT_SEEN_KEY = "agent_seen"


def _launched(vm: VMRecord, field: str, configured: int) -> int:
    """``field`` as the running VMM was started with it (recorded at launch)."""
    recorded = vm.config.launched
    if recorded is None:
        return configured
    return recorded.vcpus if field == "vcpus" else recorded.memory_mib


class SnapshotUnsupported(BangerError):
    http_status = 409


def default_name(vm_name: str, now: datetime) -> str:
    """``<vm>-<YYYYmmdd-HHMMSS>``: a DNS label, like VM names (which restores reuse)."""
    return check_name(f"{vm_name[:44].rstrip('-')}-{now.strftime('%Y%m%d-%H%M%S')}")


def check_snapshot_name(name: str) -> str:
    try:
        return check_name(name)
    except BangerError as exc:
        raise type(exc)(exc.message.replace("name:", "snapshot name:", 1), exc.hint) from None


def driver_kind(driver: VMMDriver) -> str:
    """``qemu``, ``firecracker`` or ``jailed`` (Firecracker under the jailer)."""
    from banger.daemon.vms.jailed import JailedFirecracker

    if isinstance(driver, JailedFirecracker):
        return "jailed"
    return driver.name


def refuse_jailed(kind: str) -> None:
    if kind == "jailed":
        raise SnapshotUnsupported(
            "vm snapshot is not supported for Firecracker under the jailer yet: the helper's "
            "start_jailer op cannot link a snapshot's state and memory into a new jail",
            hint="set firecracker.jailer = false for VMs you want to snapshot",
        )


def snapshot_info(paths_dir: str, record: SnapshotRecord, image: str | None) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "vm": record.vm_name,
        "vm_id": record.vm_id,
        "vmm": record.vmm,
        "image": record.image_id,
        "image_name": image,
        "kernel": record.kernel_id,
        "init_mode": record.init_mode,
        "vcpus": record.vcpus,
        "memory_mib": record.memory_mib,
        "work_disk_size": record.work_disk_size,
        "ip": str(record.ip),
        "mac": record.mac,
        "size": record.size,
        "created_at": record.created_at.isoformat(),
        "dir": paths_dir,
        "paused_vm": bool(record.meta.get("left_paused")),
        "frozen": bool(record.meta.get(FROZEN_KEY)),
    }


class Snapshots:
    """Snapshot create/list/show/remove on top of the VM service (its locks, ops, drivers)."""

    def __init__(self, vms: VMService, clock: Callable[[], datetime] | None = None) -> None:
        self.vms = vms
        self.store = vms.store
        self.paths = vms.paths
        self.clock = clock or (lambda: datetime.now(UTC))
        #: Snapshot ids being written or restored from right now (kept by :func:`sweep`).
        self.busy: set[str] = set()

    # -- reading -------------------------------------------------------------------
    def info(self, record: SnapshotRecord) -> dict[str, Any]:
        image = None
        if record.image_id:
            with contextlib.suppress(BangerError):
                image = self.store.get_image(record.image_id).name
        return snapshot_info(str(files.snapshot_dir(self.paths, record.id)), record, image)

    async def listing(self, vm_ref: str | None = None) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            vm_id = None
            if vm_ref is not None:
                try:
                    vm_id = self.store.resolve_vm(vm_ref).id
                except BangerError:
                    # The source VM may be gone: match the name the snapshots recorded.
                    named = [s for s in self.store.list_snapshots() if s.vm_name == vm_ref]
                    return [self.info(s) for s in named]
            return [self.info(s) for s in self.store.list_snapshots(vm_id)]

        return await asyncio.to_thread(work)

    async def show(self, ref: str) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.info(self.store.resolve_snapshot(ref)))

    async def remove(self, ref: str) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            record = self.store.resolve_snapshot(ref)
            if record.id in self.busy:
                raise Conflict(f"snapshot {record.name} is in use by a restore; retry after it")
            info = self.info(record)
            self.store.delete_snapshot(record.id)
            # A running Firecracker restored from it maps the memory file privately:
            # unlinking leaves its pages alone.
            discard_tree(files.snapshot_dir(self.paths, record.id))
            return info

        return await asyncio.to_thread(work)

    def sweep(self) -> list[str]:
        known = {s.id for s in self.store.list_snapshots()}
        return files.sweep(self.paths, known, self.busy)

    # -- create ----------------------------------------------------------------------
    def plan(self, ref: str, name: str | None) -> tuple[VMRecord, str]:
        """Checks that need no operation: a bad name or a taken one creates nothing."""
        vm = self.store.resolve_vm(ref)
        chosen = check_snapshot_name(name) if name else default_name(vm.name, self.clock())
        try:
            self.store.resolve_snapshot(chosen)
        except BangerError:
            pass
        else:
            raise Conflict(
                f"snapshot name: a snapshot named {chosen!r} already exists",
                hint=f"pick another --name, or remove it: banger vm snapshot-rm {chosen}",
            )
        refuse_jailed(driver_kind(self.vms.pipeline.driver_for(vm)))
        return vm, chosen

    async def create(self, ref: str, name: str | None, *, stop: bool) -> tuple[Operation, str]:
        """Start a ``vm.snapshot`` operation; returns it and the snapshot's name."""
        vm, chosen = await asyncio.to_thread(self.plan, ref, name)
        await asyncio.to_thread(self.sweep)

        async def body(op: OpHandle) -> None:
            async with self.vms.locks.hold(vm.id):
                current = await asyncio.to_thread(self.store.get_vm, vm.id)
                await self._create(current, chosen, stop, op)

        return await self.vms.ops.start("vm.snapshot", vm.name, body), chosen

    def _running(self, vm: VMRecord) -> VMMProcess:
        proc = self.vms.vmm_process(vm)
        if (
            proc is None
            or not self.vms.alive(vm)
            or vm.state not in (VMState.RUNNING, VMState.PAUSED)
            or vm.ip is None
            or vm.mac is None
        ):
            raise Conflict(
                f"VM {vm.name} is {vm.state.value}; only a running or paused VM can be "
                "snapshotted (its memory is what a snapshot keeps)",
                hint=f"banger vm start {vm.name}",
            )
        return proc

    async def _create(self, vm: VMRecord, name: str, stop: bool, op: OpHandle) -> None:
        await op.stage("snapshot")
        proc = self._running(vm)
        driver = self.vms.pipeline.driver_for(vm)
        kind = driver_kind(driver)
        refuse_jailed(kind)
        root = self.vms.pipeline.root_disk_of(vm).path
        snapshot_id = new_id()
        self.busy.add(snapshot_id)
        tmp = files.temp_dir(self.paths, snapshot_id)
        freeze = agent_use.Freeze(self.vms.pipeline.agent_endpoint(vm))
        # What was being written when a write failed (for a disk-full error).
        step = "creating the snapshot's directory"
        try:
            await asyncio.to_thread(files.make_temp, self.paths, snapshot_id)
            layout = files.SnapshotLayout(tmp, files.root_name(root))
            if vm.state == VMState.RUNNING:
                # Disks consistent on their own, not only with the saved memory.
                await freeze.freeze(vm.config)
                await op.event("info", f"guest filesystems: {freeze.note}")
            try:
                step = "saving the guest's memory and device state"
                # On a failure the driver has resumed a guest that was running.
                was_running = await self._save(driver, kind, proc, layout)
                await op.event(
                    "info", f"guest state saved ({kind}); copying the disks while paused"
                )
                try:
                    await op.stage("copy_disks")
                    step = "copying the guest's disks"
                    await asyncio.to_thread(
                        files.copy_disks,
                        root,
                        self.paths.vm_work_disk(vm.id),
                        self.paths.vm_host_key(vm.id),
                        layout,
                    )
                except BaseException:
                    # A failed snapshot leaves the VM as it was, --stop or not.
                    if was_running:
                        await driver.resume(proc)
                    raise
                # A frozen guest is resumed even with --stop: only a running one thaws.
                if was_running and (not stop or freeze.frozen):
                    await driver.resume(proc)
            except BaseException:
                try:
                    await freeze.thaw()
                except AgentError as exc:  # the first failure is the one reported
                    await op.event("warning", exc.message)
                raise
            await freeze.thaw()
            if was_running and stop and freeze.frozen:
                await driver.pause(proc)
            if was_running and not stop:  # its clock stood still while saved
                await agent_use.resync_clock(
                    self.vms.pipeline.agent_endpoint(vm), vm.config, op, "the snapshot"
                )
            if was_running and stop:
                await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.PAUSED)
                await op.event("info", f"VM {vm.name} left paused (banger vm resume {vm.name})")
            await op.stage("publish")
            step = "writing the snapshot's record"
            record = await asyncio.to_thread(
                self._publish,
                vm,
                name,
                snapshot_id,
                tmp,
                layout,
                kind,
                was_running and stop,
                freeze.frozen,
            )
        except BaseException as exc:
            await asyncio.to_thread(discard_tree, tmp)
            if disk_full_is_said(exc):  # one line saying so, not QEMU's or cp's own words
                raise await asyncio.to_thread(self._disk_full, vm, root, step) from exc
            raise
        finally:
            self.busy.discard(snapshot_id)
        await op.event(
            "info",
            f"snapshot {record.name} of VM {vm.name}: {record.size >> 20} MiB",
            {"snapshot": record.name, "snapshot_id": record.id},
        )

    def _disk_full(self, vm: VMRecord, root: Path, step: str) -> DiskFull:
        """The snapshot directory's filesystem filled up at ``step`` (its temp dir is gone)."""
        where = files.snapshots_dir(self.paths)
        memory = _launched(vm, "memory_mib", vm.memory_mib)
        disks = files.allocated_mib(root, self.paths.vm_work_disk(vm.id))
        return DiskFull(
            f"no space left on device in {where} while {step} (snapshot of VM {vm.name}): "
            f"it needs up to about {memory + disks} MiB there (memory {memory} MiB at most, "
            f"disks {disks} MiB) and {free_bytes(where) >> 20} MiB are free; nothing was "
            f"kept, VM {vm.name} is as it was",
            hint=f"free space on the filesystem at {mount_point(where)} (banger vm snapshots "
            "lists the snapshots there; banger vm snapshot-rm removes one)",
        )

    async def _save(
        self, driver: VMMDriver, kind: str, proc: VMMProcess, layout: files.SnapshotLayout
    ) -> bool:
        """Pause and write the guest state; returns whether the guest was running."""
        from banger.vmm.firecracker.driver import FirecrackerDriver
        from banger.vmm.firecracker.plan import SnapshotFiles
        from banger.vmm.qemu import QemuDriver

        if isinstance(driver, QemuDriver):
            return await driver.snapshot(proc, layout.state, resume=False)
        if isinstance(driver, FirecrackerDriver):
            running = (await driver.status(proc)).state == VMMState.RUNNING
            try:
                await driver.snapshot(
                    proc, SnapshotFiles(layout.state, layout.memory), resume=False
                )
            except BaseException:
                # It paused for the snapshot: a failed one (a full disk) leaves it running,
                # as QEMU's save_state does.
                if running:
                    with contextlib.suppress(BangerError):
                        await driver.resume(proc)
                raise
            return running
        raise SnapshotUnsupported(f"vm snapshot: the {kind} driver cannot take snapshots")

    def _firecracker_drive_paths(self, vm: VMRecord) -> dict[str, str]:
        """The host paths Firecracker's own state records for the disks.

        A VM booted by banger: its own files. A VM restored from a snapshot:
        the paths *that* snapshot recorded (Firecracker keeps them across a
        load), for as long as the restored process runs — a cold restart
        opens the VM's own files again.
        """
        carried = vm.config.firecracker_drive_paths
        if (
            carried is not None
            and carried.pid == vm.pid
            and carried.start_time == vm.pid_start_time
        ):
            return dict(carried.paths)
        return {
            "root": str(self.vms.pipeline.root_disk_of(vm).path),
            "work": str(self.paths.vm_work_disk(vm.id)),
        }

    def _publish(
        self,
        vm: VMRecord,
        name: str,
        snapshot_id: str,
        tmp: Path,
        layout: files.SnapshotLayout,
        kind: str,
        left_paused: bool,
        frozen: bool = False,
    ) -> SnapshotRecord:
        assert vm.ip is not None and vm.mac is not None
        meta: dict[str, Any] = {
            "format": FORMAT,
            "root_file": layout.root,
            "root_format": "qcow2" if layout.root.endswith(".qcow2") else "raw",
            "accelerator": vm.config.accelerator,
            "cmdline": vm.config.cmdline,
            PVH_BOOT_KEY: vm.config.pvh_boot is True,
            AGENT_CHANNEL_KEY: vm.config.agent_channel is True,
            "hostname": vm.name,
            "left_paused": left_paused,
            # The disks were copied with the guest's filesystems frozen, and the saved
            # memory holds them frozen: a restore thaws them through the agent.
            FROZEN_KEY: frozen,
            AGENT_SEEN_KEY: vm.config.agent_seen,
        }
        if kind == "firecracker":
            # Where this Firecracker has its disks open: its state file names them.
            meta["drive_paths"] = self._firecracker_drive_paths(vm)
        fields: dict[str, Any] = {
            "id": snapshot_id,
            "name": name,
            "vm_id": vm.id,
            "vm_name": vm.name,
            "vmm": vm.vmm,
            "image_id": vm.image_id,
            "kernel_id": vm.kernel_id,
            "init_mode": vm.init_mode,
            # what the running VMM has, not what `vm set` asked for its next start:
            # a restore must give QEMU the memory size the saved state holds
            "vcpus": _launched(vm, "vcpus", vm.vcpus),
            "memory_mib": _launched(vm, "memory_mib", vm.memory_mib),
            "work_disk_size": vm.work_disk_size,
            "ip": vm.ip,
            "mac": vm.mac,
            "size": files.disk_usage(tmp),
            "meta": meta,
        }
        dest = files.snapshot_dir(self.paths, snapshot_id)
        files.publish(tmp, dest, {**fields, "ip": str(vm.ip)})
        try:
            return self.store.create_snapshot(**fields)
        except BaseException:
            discard_tree(dest)
            raise
