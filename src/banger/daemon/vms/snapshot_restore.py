"""``banger vm create NEW --from-snapshot SNAP``: a new VM running a saved guest.

The new VM gets its own disks (never the snapshot's own files: the guest
writes them) — a QEMU root is an empty qcow2 overlay on the snapshot's frozen
layer (:mod:`banger.disk.layers`), the work disk a copy — and continues where
the snapshot's guest was: same processes, same memory, same uptime — no boot.

A snapshot whose machine had the guest agent channel (QEMU: every one since
the channel exists; Firecracker: every one with the vsock agent) is
**re-identified** (:mod:`.reident`): the new VM leases an address of its own
like any new VM, the guest resumes cut off from the bridge, takes the new VM's
MAC, address, hostname and machine-id through the agent (its RNG reseeded from
the host, its filesystems thawed when the snapshot was taken frozen), and only
then is it connected. So any number of VMs can be restored from one snapshot
at once, also while the source still runs. The agent is required: a guest
whose agent does not answer fails the restore with one error saying so, and
nothing is left behind.

How the guest is cut off until then:

- QEMU: the NIC's link is held down (QMP ``set_link`` off between the load and
  ``cont``, on after the agent's work).
- Firecracker has no ``set_link``: the new VM's tap is made **detached** by
  the root helper (``open_tap_detached``: on no bridge, link down), the load
  points the snapshot's ``eth0`` at it (``network_overrides``), the guest
  resumes (once its drives are re-pointed, below); after the agent's work
  the helper's ``attach_tap`` puts it on the bridge and brings it up. While
  detached the tap is down, so the kernel refuses every frame Firecracker
  writes (EIO; tests/integration/test_helper_detached_tap.py), which
  Firecracker's net device logs, counts (``tap_write_fails``) and drops.
  Firecracker's virtio-net does no MAC filtering (it offers no control
  queue, so the guest's ``ip link set address`` changes only the guest
  driver's address, and Firecracker forwards whatever source MAC the guest
  sends): the bridge learns the new MAC from the first frame. Tested
  against the Firecracker stand-in and a real ``qemu-ga`` running the real
  script in namespaces (``tests/integration/test_reident_firecracker_standin.py``),
  never against a real Firecracker guest (no KVM here).

What the guest's memory fixes, the restore keeps:

- its **sshd host key**: every VM restored from one snapshot presents the
  snapshot's key pair (pinned under each VM's own name and address).
- its processes, files in memory, uptime and ``boot_id``.

Snapshots without the agent channel (QEMU from before it, Firecracker without
the vsock) keep the old behaviour: the guest keeps the snapshot's **address and MAC** (the new
VM leases exactly that address, so such a restore is refused — naming the
holder — while another VM holds it, the source included) and its hostname
until the new VM is rebooted.

QEMU: ``-incoming defer -S``, ``migrate-incoming`` from the state file, ``cont``.
Firecracker (plain mode): ``PUT /snapshot/load`` with a network override for
the new tap, not resumed; Firecracker reopens the disks at the host paths the
snapshot recorded (the source VM's directory): where the source's files still
are (it runs) they are opened as they are, where they are gone links to the new
VM's copies are placed for the load only (:func:`.snapshot_files.links_at`).
Then ``PATCH /drives`` re-points each drive at the new VM's own file, and only
then does the guest resume: it never does I/O on the source's disks, and a
snapshot of the restored VM records its own files.

Stages: record (VM row, + the exact lease without re-identification, one
transaction) → root_disk (overlay + layer links, copies) → network (lease, tap, pinned key) → launch
(restore) → reidentify → wait_ssh → running; every stage has an undo, so a
failed restore leaves nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.vms import agent_use, reident
from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.names import check_name
from banger.daemon.vms.pipeline import launch_record
from banger.daemon.vms.snapshots import (
    AGENT_SEEN_KEY,
    FROZEN_KEY,
    Snapshots,
    SnapshotUnsupported,
    driver_kind,
    refuse_jailed,
)
from banger.daemon.vms.undo import UndoStack
from banger.daemon.vms.vmm_choice import (
    AGENT_CHANNEL_KEY,
    qemu_pvh_kernel,
)
from banger.disk import layers
from banger.errors import BangerError, Conflict, NotFound
from banger.guest.agent import AgentError
from banger.kernels.store import read_kernel
from banger.rmtree import discard_tree_async
from banger.store import (
    AddressTaken,
    SnapshotRecord,
    VMConfig,
    VMRecord,
    VMState,
)
from banger.vmm.base import LaunchSpec, VMMDriver, VMMProcess
from banger.vmm.process import log_tail
from banger.vmm.qemu_snapshot import set_link
from banger.vmm.qmp import QMPClient


def reidentifies(snap: SnapshotRecord) -> bool:
    """Whether a restore gives the guest a new identity (:mod:`.reident`): a snapshot
    whose machine had the agent channel (QEMU's virtio-serial port, Firecracker's
    vsock: :data:`AGENT_CHANNEL_KEY`, recorded for both). Others keep the snapshot's
    address, MAC and hostname."""
    return snap.vmm in ("qemu", "firecracker") and snap.meta.get(AGENT_CHANNEL_KEY) is True


def holds_tap_detached(snap: SnapshotRecord) -> bool:
    """The restored guest's tap stays off the bridge until it is re-identified:
    Firecracker's way of holding the link down (it has no ``set_link``)."""
    return reidentifies(snap) and snap.vmm == "firecracker"


class SnapshotRestore:
    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        self.vms = snapshots.vms
        self.store = snapshots.store
        self.paths = snapshots.paths

    def plan(self, ref: str, name: str) -> SnapshotRecord:
        """Everything checkable before an operation starts (a 4xx here creates nothing)."""
        check_name(name)
        snap = self.store.resolve_snapshot(ref)
        self.vms.refuse_taken_name(name)
        if reidentifies(snap) and snap.meta.get(AGENT_SEEN_KEY) is False:
            raise reident.AgentRequired(
                f"snapshot {snap.name}: its guest's agent never answered (vm show said "
                "'not answering'); a restore takes on a new address, MAC and hostname through "
                "the guest agent, so the snapshot's image needs qemu-guest-agent running",
                hint="install qemu-guest-agent in the image (banger's images have it), "
                "boot, snapshot again",
            )
        subnet = self.vms.config.network.subnet
        if reidentifies(snap):
            pass  # the new VM gets a lease of its own
        elif snap.ip not in subnet:
            raise Conflict(
                f"snapshot {snap.name}: its guest has address {snap.ip}, outside "
                f"network.subnet {subnet} (the guest keeps the address it was saved with)",
                hint="restore it with the subnet it was taken on",
            )
        holder = None if reidentifies(snap) else self.store.ip_holder(snap.ip)
        if holder is not None:
            raise AddressTaken(snap.ip, holder)
        pipeline = self.vms.pipeline
        driver = pipeline.drivers.get(snap.vmm) if pipeline.drivers else pipeline.driver
        if driver.name != snap.vmm:
            raise SnapshotUnsupported(f"snapshot {snap.name} is a {snap.vmm} snapshot")
        refuse_jailed(driver_kind(driver))
        taken_on = snap.meta.get("accelerator")
        if snap.vmm == "qemu" and taken_on and taken_on != pipeline.accel.kind:
            raise SnapshotUnsupported(
                f"snapshot {snap.name} was taken under {taken_on}; this host runs QEMU guests "
                f"with {pipeline.accel.kind} (the saved CPU state does not carry over)",
            )
        if snap.kernel_id is None or snap.image_id is None:
            raise NotFound(f"snapshot {snap.name} has no kernel or image recorded")
        return snap

    async def restore(self, ref: str, name: str) -> Operation:
        snap = await asyncio.to_thread(self.plan, ref, name)

        async def body(op: OpHandle) -> None:
            self.snapshots.busy.add(snap.id)
            try:
                await self._restore(snap, name, op)
            finally:
                self.snapshots.busy.discard(snap.id)

        # A restore is a create: "vm.create", so that startup reconciliation rolls an
        # interrupted one back like any interrupted create (record, lease, disks, VMM).
        return await self.vms.ops.start("vm.create", name, body)

    async def _restore(
        self, snap: SnapshotRecord, name: str, op: OpHandle, *, pool: str | None = None
    ) -> None:
        """``pool``: the new VM is that pool's ready guest (hidden from ``vm list``)."""
        await op.stage("record")
        layout = files.SnapshotLayout(
            files.snapshot_dir(self.paths, snap.id), str(snap.meta["root_file"])
        )
        vm = await asyncio.to_thread(self._record, snap, name, pool)
        where = "under its own address" if reidentifies(snap) else f"at {snap.ip}"
        await op.event(
            "info",
            f"VM {vm.name} has id {vm.id}; restoring snapshot {snap.name} of {snap.vm_name} "
            + where,
            {"vm": vm.id},
        )
        undo = UndoStack()
        undo.push("VM record", lambda: asyncio.to_thread(self.vms._forget_row, vm))
        async with self.vms.locks.hold(vm.id):
            try:
                vm = await self._disks(vm, snap, layout, op, undo)
                await self._boot(vm, snap, layout, op, undo)
            except BaseException:
                await self.vms._unwind(undo, op)
                raise
            undo.discard()

    def _record(self, snap: SnapshotRecord, name: str, pool: str | None = None) -> VMRecord:
        """The row and the exact lease in one transaction: both or neither."""
        with self.store.transaction():
            vm = self.store.create_vm(
                name=name,
                image_id=snap.image_id,
                kernel_id=snap.kernel_id,
                vmm=snap.vmm,
                config=VMConfig(
                    vmm_reason=f"restored from snapshot {snap.name} (taken on {snap.vmm})",
                    restored_from=snap.id,
                ),
                init_mode=snap.init_mode,
                vcpus=snap.vcpus,
                memory_mib=snap.memory_mib,
                work_disk_size=snap.work_disk_size,
                pool=pool,
            )
            if not reidentifies(snap):
                self.store.claim_ip(vm.id, snap.ip)
            return self.store.get_vm(vm.id)

    async def _disks(
        self,
        vm: VMRecord,
        snap: SnapshotRecord,
        layout: files.SnapshotLayout,
        op: OpHandle,
        undo: UndoStack,
    ) -> VMRecord:
        await op.stage("root_disk")
        vm_dir = self.paths.vm_dir(vm.id)
        await asyncio.to_thread(vm_dir.mkdir, 0o700, True)
        undo.push("vm directory", lambda: discard_tree_async(vm_dir))
        qcow2 = layout.root.endswith(".qcow2")
        root = self.paths.vm_root_disk(vm.id, "qcow2" if qcow2 else "ext4")
        await asyncio.to_thread(
            files.restore_disks,
            layout,
            root,
            self.paths.vm_work_disk(vm.id),
            self.paths.vm_host_key(vm.id),
        )
        if layers.is_layer(layout.root):
            said = f"root disk: an overlay on the snapshot's frozen layer {layout.root}; work disk"
        else:
            said = "disks"
        await op.event("info", f"{said} and sshd host key copied from the snapshot")
        return await asyncio.to_thread(
            self.store.update_vm,
            vm.id,
            root_strategy="qcow2" if qcow2 else "copy",
            config=dataclasses.replace(vm.config, root_disk=str(root)),
        )

    async def _boot(
        self,
        vm: VMRecord,
        snap: SnapshotRecord,
        layout: files.SnapshotLayout,
        op: OpHandle,
        undo: UndoStack,
    ) -> None:
        pipeline = self.vms.pipeline
        kernel = await asyncio.to_thread(read_kernel, self.paths.kernel_dir(snap.kernel_id or ""))
        vm, fd = await pipeline.network(vm, op, undo, detached=holds_tap_detached(snap))
        renamed = reidentifies(snap)
        try:
            if not renamed:
                # The guest's NIC keeps the MAC its kernel knows (the network stage gave
                # a new one); a re-identified guest takes the new one (:mod:`.reident`).
                vm = await asyncio.to_thread(self.store.update_vm, vm.id, mac=snap.mac)
            mac = vm.mac or snap.mac

            def as_saved(spec: LaunchSpec) -> LaunchSpec:
                saved = snap.meta.get("cmdline")
                return dataclasses.replace(
                    spec,
                    mac=mac,
                    # The line the snapshot's driver made, as it was; an older snapshot
                    # without one gets today's from the driver (``boot`` kept).
                    cmdline=str(saved) if saved else spec.cmdline,
                    boot=None if saved else spec.boot,
                    # The kernel file the snapshot was booted with, not today's choice.
                    pvh_kernel=qemu_pvh_kernel(kernel, snap.meta),
                    # The channel only when the snapshot's machine had it (older ones did not).
                    agent_socket=spec.agent_socket
                    if snap.meta.get(AGENT_CHANNEL_KEY) is True
                    else None,
                )

            spec = pipeline.launch_spec(vm, kernel, pipeline.root_disk_of(vm), fd, as_saved)
            if spec.tap_fd is None:  # Firecracker opens the tap by name
                os.close(fd)
                fd = -1
            await op.stage("launch")
            driver = pipeline.driver_for(vm)
            proc = await self._launch(driver, spec, snap, layout, link_down=renamed)
        finally:
            if fd >= 0:
                os.close(fd)

        async def kill() -> None:
            await driver.stop(proc, graceful_timeout=0)

        undo.push(f"VMM pid {proc.pid}", kill)
        # Firecracker's own state names this VM's files since the drives were re-pointed
        # (restore plan): nothing is carried for a later snapshot of it.
        config = launch_record(vm.config, spec, proc)
        vm = await asyncio.to_thread(
            self.store.update_vm,
            vm.id,
            pid=proc.pid,
            pid_start_time=proc.start_time,
            config=config,
        )
        await op.event("info", f"{driver.name} restored the guest (pid {proc.pid})")
        if renamed:
            await self._reidentify(vm, snap, spec, op)
        elif snap.meta.get(FROZEN_KEY) is True:
            # Saved with its filesystems frozen: nothing can write (nor log in) until thawed.
            try:
                count = await agent_use.thaw_restored(pipeline.agent_endpoint(vm))
            except AgentError as exc:
                raise AgentError(
                    f"snapshot {snap.name} was taken with the guest's filesystems frozen and "
                    f"the restored guest's agent did not thaw them: {exc.message}"
                ) from exc
            await op.event("info", f"guest filesystems thawed ({count})")
        await pipeline.wait_ssh(vm, proc, op)
        # The saved guest's clock stopped when the snapshot was taken.
        vm = await asyncio.to_thread(self.store.get_vm, vm.id)
        await agent_use.resync_clock(pipeline.agent_endpoint(vm), vm.config, op, "the restore")
        await op.stage("running")
        await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.RUNNING, last_error=None)

    async def _reidentify(
        self, vm: VMRecord, snap: SnapshotRecord, spec: LaunchSpec, op: OpHandle
    ) -> None:
        """The guest (its link down) takes the VM's identity through its agent; then the
        link comes up (:mod:`.reident`)."""
        await op.stage("reidentify")
        assert vm.ip is not None and vm.mac is not None
        net = self.vms.config.network
        identity = reident.Identity.new(
            vm.name, vm.mac, vm.ip, net.subnet, net.gateway, net.gateway
        )
        endpoint = self.vms.pipeline.agent_endpoint(vm)
        agent = await reident.connect_restored(endpoint, snap.name)
        async with agent:
            thawed = await reident.reidentify(
                agent, identity, thaw=snap.meta.get(FROZEN_KEY) is True
            )
        if thawed:
            await op.event("info", f"guest filesystems thawed ({thawed})")
        if holds_tap_detached(snap):
            # Firecracker: the guest now sends with the VM's own MAC (its virtio-net
            # filters no source MAC; the device's saved config space keeps the
            # source's, which the guest driver read at boot and does not read again
            # unless it is re-probed) — only now may the tap join the bridge.
            assert vm.tap is not None
            await self.vms.pipeline.hostnet.attach_tap(vm.tap)
            await op.event(
                "info",
                f"guest re-identified as {vm.name} at {vm.ip} (MAC {vm.mac}; new machine-id, "
                f"RNG reseeded); tap {vm.tap} attached to {self.vms.pipeline.hostnet.bridge}",
            )
            return
        async with await QMPClient.connect(spec.control_socket) as qmp:
            filters = await qmp.execute("query-rx-filter")
            await qmp.execute(*set_link(True))
        macs = [str(f.get("main-mac")) for f in filters or [] if isinstance(f, dict)]
        await op.event(
            "info",
            f"guest re-identified as {vm.name} at {vm.ip} (MAC {vm.mac}; QEMU's NIC follows: "
            f"{', '.join(macs)}; new machine-id, RNG reseeded); link up",
        )

    async def _launch(
        self,
        driver: VMMDriver,
        spec: LaunchSpec,
        snap: SnapshotRecord,
        layout: files.SnapshotLayout,
        *,
        link_down: bool = False,
    ) -> VMMProcess:
        from banger.vmm.firecracker.driver import FirecrackerDriver
        from banger.vmm.firecracker.plan import SnapshotFiles
        from banger.vmm.qemu import QemuDriver

        if isinstance(driver, QemuDriver):
            offset = spec.vmm_log.stat().st_size if spec.vmm_log.exists() else 0
            try:
                return await driver.restore(spec, layout.state, link_down=link_down)
            except BangerError as exc:
                # "QMP connection failed" says nothing: QEMU's own words are in its log
                said = log_tail(spec.vmm_log, offset)
                if not said:
                    raise
                raise BangerError(
                    f"restoring snapshot {snap.name}: QEMU could not load the saved state: {said}",
                    hint=f"see {spec.vmm_log}",
                ) from exc
        if isinstance(driver, FirecrackerDriver):
            recorded = snap.meta.get("drive_paths") or {}
            links = {Path(str(recorded["root"])): spec.root_disk.path}
            if spec.work_disk is not None:
                links[Path(str(recorded["work"]))] = spec.work_disk
            # The load opens the disks where the snapshot recorded them; the restore plan
            # re-points each drive at this VM's own file before the guest resumes
            # (``PATCH /drives``). A path still there (the source runs, or kept its
            # files) is opened as it is and never written; a path that is gone gets a
            # link to this VM's file for the load (a dangling link there is refused by
            # links_at, naming it, rather than left to fail Firecracker's load).
            links = {at: to for at, to in links.items() if not at.exists()}
            with files.links_at(links):
                return await driver.restore(spec, SnapshotFiles(layout.state, layout.memory))
        raise SnapshotUnsupported(f"the {driver.name} driver cannot restore snapshots")
