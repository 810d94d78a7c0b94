"""Startup reconciliation: compare the store with reality, repair, report.

Called from :mod:`banger.daemon.lifecycle` in two phases, both before the API
serves its first request (so no operation can race a repair):

1. :func:`before_serving` (store open, no helper needed): operations the last
   daemon left running are marked failed — their kind, target and stage are
   remembered first — and the file repairs of :mod:`.files` run
   (temp builds, half-published images/kernels, per-VM leftovers).
2. :func:`after_stack` (VM service built; the helper is asked for repairs):

   - a ``vm create`` that was interrupted is rolled back like its undo stack
     would have done (VMM stopped, disks and directory removed, host key
     unpinned, record and lease deleted): the create never returned, so its
     VM holds nothing of the owner's yet;
   - VMs recorded as running (or starting, stopping, paused) whose VMM is gone
     (pid + start time, :mod:`banger.procinfo`) are marked stopped with the
     reason in ``last_error``; live ones are re-attached
     (:meth:`VMService.reattach`);
   - VMM processes of this owner serving a VM no record runs are killed;
   - ``bt-…`` taps that no running VM owns are deleted through the helper;
   - leases whose VM is gone are released; control sockets of deleted VMs removed;
   - internal fork snapshots (``fork.<hex>``) are removed: a fork removes its
     own when it ends, and none is in flight at startup, so any left is a
     killed bangerd's (the same code as the sweep at each fork's start,
     :func:`banger.daemon.vms.fork.remove_internal_snapshots`);
   - staging directories of image ops (``tmp/register-*``, ``tmp/pull-*``) that
     the file repairs could not remove — a helper killed mid-op leaves root's
     files there — are removed by the helper's ``remove_staging`` op.

   A work disk that a VM record references is never deleted: only the disks
   of an interrupted create (whose record goes too) are.

What was repaired goes to the daemon log and to ``state/reconcile.json``
(:mod:`banger.doctor.reconcile_report`), which ``banger doctor`` shows. The NAT entry is
per bridge, not per VM: it is re-ensured (and a stale subnet for our bridge
replaced) by the helper at the next VM start, so nothing here reads nft.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime

from banger.daemon.images_cleanup import helper_busy
from banger.daemon.ops import Operations
from banger.daemon.reconcile import files as reconcile_files
from banger.daemon.reconcile.probe import vmm_processes
from banger.daemon.vms.fork import remove_internal_snapshots
from banger.daemon.vms.snapshots import Snapshots
from banger.daemon.vms.stack import VMStack
from banger.daemon.vms.stopped import mark_stopped
from banger.doctor.reconcile_report import ReconcileReport, report_path
from banger.errors import BangerError
from banger.helper.staging import NAME as STAGING_NAME
from banger.net.taps import banger_taps, tap_name
from banger.paths import Paths
from banger.procinfo import reap, send_signal, wait_for_exit
from banger.store import Store, VMRecord, VMState

#: The name the log lines had before the package split; the report logs under it too.
log = logging.getLogger("banger.daemon.reconcile")

#: States in which a VM's record claims a live VMM.
CLAIMS_A_VMM = (VMState.RUNNING, VMState.PAUSED, VMState.STARTING, VMState.STOPPING)


@dataclass(frozen=True)
class Interrupted:
    """An operation the previous daemon left running (read before it is marked failed)."""

    op_id: str
    kind: str
    target: str | None
    stage: str | None
    created_at: datetime


@dataclass
class Startup:
    paths: Paths
    store: Store
    report: ReconcileReport
    interrupted: list[Interrupted]

    def interrupted_on(self, vm: VMRecord, kinds: tuple[str, ...]) -> Interrupted | None:
        """The newest interrupted operation of ``kinds`` on ``vm`` (started before its row)."""
        for op in self.interrupted:  # newest first
            if op.kind in kinds and op.target == vm.name:
                return op
        return None


def before_serving(paths: Paths, store: Store, ops: Operations) -> Startup:
    report = ReconcileReport()
    interrupted = [
        Interrupted(r.id, r.kind, r.target, r.stage, r.created_at)
        for r in store.list_operations(include_finished=False, limit=10_000)
    ]
    ops.fail_interrupted()
    for op in interrupted:
        report.fixed(
            f"operation {op.op_id} ({op.kind} {op.target or ''}): interrupted at stage "
            f"{op.stage or '(none)'}; marked failed"
        )
    reconcile_files.before_serving(paths, store, report)
    return Startup(paths, store, report, interrupted)


async def after_stack(stack: VMStack | None, startup: Startup) -> ReconcileReport:
    report = startup.report
    if stack is not None:
        for step in (
            _roll_back_interrupted_creates,
            _mark_dead_vmms,
            _reattach,
            _kill_orphan_vmms,
            _delete_stray_taps,
            _release_orphan_leases,
            _remove_stale_sockets,
            _remove_fork_snapshots,
            _remove_root_owned_staging,
            _remove_stale_dm_snapshots,
        ):
            try:
                await step(stack, startup)
            except Exception as exc:  # one broken step must not keep the daemon down
                log.exception("reconcile step %s failed", step.__name__)
                report.fail(f"{step.__name__.strip('_').replace('_', ' ')}: {exc!r}")
    await asyncio.to_thread(report.write, report_path(startup.paths))
    return report


# -- VMs ---------------------------------------------------------------------------------
async def _roll_back_interrupted_creates(stack: VMStack, startup: Startup) -> None:
    vms = stack.vms
    for vm in await asyncio.to_thread(startup.store.list_vms):
        op = startup.interrupted_on(vm, ("vm.create",))
        from_op = op is not None and vm.created_at >= op.created_at and vm.state in CLAIMS_A_VMM
        if vm.state != VMState.CREATING and not from_op:
            continue
        stage = op.stage if op is not None else None
        proc = vms.vmm_process(vm)
        if proc is not None and vms.alive(vm):
            await vms.pipeline.driver_for(vm).stop(proc, graceful_timeout=0)
        await asyncio.to_thread(vms._delete_files, vm)
        await asyncio.to_thread(vms._forget_row, vm)  # known_hosts pins, row, lease
        vms.locks.forget(vm.id)
        startup.report.fixed(
            f"VM {vm.name}: create interrupted at stage {stage or vm.state.value}; rolled back "
            "(VMM, disks, directory, lease, record)"
        )


async def _mark_dead_vmms(stack: VMStack, startup: Startup) -> None:
    vms = stack.vms
    for vm in await asyncio.to_thread(startup.store.list_vms):
        if vms.alive(vm):
            continue
        op = startup.interrupted_on(vm, ("vm.start", "vm.restart", "vm.stop", "vm.rm"))
        interrupted = (
            f"{op.kind} interrupted at stage {op.stage or '(none)'}: bangerd stopped"
            if op is not None
            else None
        )
        if vm.state not in CLAIMS_A_VMM:
            if op is not None and op.kind in ("vm.start", "vm.restart"):
                # Interrupted before it launched anything: the VM never left its
                # state, but `vm show` should still say why it is not running.
                await asyncio.to_thread(startup.store.update_vm, vm.id, last_error=interrupted)
                startup.report.fixed(f"VM {vm.name}: left {vm.state.value} ({interrupted})")
            continue
        if interrupted is not None:
            reason = interrupted
        elif vm.pid is not None:
            reason = f"the VMM (pid {vm.pid}) exited while bangerd was not running"
        else:
            reason = f"no VMM was running for it when bangerd started (state was {vm.state})"
        await mark_stopped(vms, vm, reason)
        startup.report.fixed(f"VM {vm.name}: marked stopped ({reason})")


async def _reattach(stack: VMStack, startup: Startup) -> None:
    await stack.vms.reattach()


async def _kill_orphan_vmms(stack: VMStack, startup: Startup) -> None:
    vms = stack.vms
    records = await asyncio.to_thread(startup.store.list_vms)
    running = {(vm.pid, vm.pid_start_time) for vm in records if vms.alive(vm)}
    found = await asyncio.to_thread(vmm_processes, startup.paths.vms_dir, os.getuid())
    for proc in found:
        if (proc.pid, proc.start_time) in running:
            continue
        if send_signal(proc.pid, proc.start_time, signal.SIGKILL):
            await wait_for_exit(proc.pid, 5.0, proc.start_time)
            reap(proc.pid)
            startup.report.fixed(
                f"process {proc.pid} (for VM {proc.vm_id}): killed, no VM record runs it"
            )


async def _delete_stray_taps(stack: VMStack, startup: Startup) -> None:
    vms = stack.vms
    owned = set()
    for vm in await asyncio.to_thread(startup.store.list_vms):
        if vms.alive(vm):
            owned.add(vm.tap or tap_name(vm.id))
    taps = await asyncio.to_thread(banger_taps, stack.hostnet.bridge, os.getuid())
    for tap in taps:
        if tap in owned:
            continue
        try:
            await stack.hostnet.delete_tap(tap)
        except (BangerError, OSError) as exc:
            message = exc.message if isinstance(exc, BangerError) else str(exc)
            startup.report.fail(f"tap {tap}: no running VM owns it, but not deleted: {message}")
        else:
            startup.report.fixed(f"tap {tap}: deleted, no running VM owns it")


async def _release_orphan_leases(stack: VMStack, startup: Startup) -> None:
    store = startup.store
    ids = {vm.id for vm in await asyncio.to_thread(store.list_vms)}
    for lease in await asyncio.to_thread(store.list_leases):
        if lease.vm_id not in ids:
            await asyncio.to_thread(store.release_ip, lease.vm_id)
            startup.report.fixed(f"lease {lease.ip}: released (VM {lease.vm_id} is gone)")


async def _remove_stale_sockets(stack: VMStack, startup: Startup) -> None:
    known = {vm.id for vm in await asyncio.to_thread(startup.store.list_vms)}
    runtime = startup.paths.runtime_dir
    for pattern, suffix in (("vm-*.qmp", ".qmp"), ("vm-*.fc", ".fc")):
        for sock in sorted(runtime.glob(pattern)):
            vm_id = sock.name.removeprefix("vm-").removesuffix(suffix)
            if vm_id not in known:
                sock.unlink(missing_ok=True)
                startup.report.fixed(f"{sock.name}: removed (its VM is gone)")


async def _remove_fork_snapshots(stack: VMStack, startup: Startup) -> None:
    # After the interrupted creates are rolled back: a half-made child's VMM,
    # restored from the snapshot's files, is stopped by then.
    swept = await remove_internal_snapshots(Snapshots(stack.vms))
    for snap in swept.removed:
        startup.report.fixed(
            f"snapshot {snap.name} (of VM {snap.vm_name}): removed, the internal snapshot "
            "of an interrupted vm fork"
        )
    for snap, why in swept.failed:
        startup.report.fail(
            f"snapshot {snap.name} (of VM {snap.vm_name}): the internal snapshot of an "
            f"interrupted vm fork, not removed: {why}"
        )


async def _remove_root_owned_staging(stack: VMStack, startup: Startup) -> None:
    tmp = startup.paths.tmp_dir
    leftovers = await asyncio.to_thread(
        lambda: (
            sorted(e for e in tmp.iterdir() if STAGING_NAME.fullmatch(e.name))
            if tmp.is_dir()
            else []
        )
    )
    for entry in leftovers:
        if await asyncio.to_thread(helper_busy, entry):
            continue  # the helper still works in it; the pull cleanup waits for it
        where = str(entry.relative_to(startup.paths.state_dir))
        try:
            await stack.hostnet.helper.acall("remove_staging", path=str(entry))
        except (BangerError, OSError) as exc:
            message = exc.message if isinstance(exc, BangerError) else str(exc)
            if "in use by a running image op" in message:  # a build outlived the old daemon
                startup.report.keep(f"{where}: not removed yet: {message}")
            else:
                startup.report.fail(f"{where}: root's files of an interrupted image op: {message}")
        else:
            startup.report.fixed(
                f"{where}: removed by the helper (root's files of an interrupted image op)"
            )


async def _remove_stale_dm_snapshots(stack: VMStack, startup: Startup) -> None:
    """dm snapshots (Firecracker root disks) of this owner whose VM record is gone."""
    from banger.disk import dmsnap

    known = {vm.id for vm in await asyncio.to_thread(startup.store.list_vms)}
    uid = os.getuid()
    for name in await asyncio.to_thread(dmsnap.snapshot_names):
        vm_id = name.removeprefix(dmsnap.DM_PREFIX)
        if vm_id in known or await asyncio.to_thread(dmsnap.node_owner, name) != uid:
            continue  # a VM of ours (kept for its next start) or another owner's device
        try:
            await stack.hostnet.helper.acall("dm_snapshot_remove", vm_id=vm_id)
        except (BangerError, OSError) as exc:
            message = exc.message if isinstance(exc, BangerError) else str(exc)
            startup.report.fail(f"dm snapshot {name}: its VM is gone, but not removed: {message}")
        else:
            startup.report.fixed(f"dm snapshot {name}: removed (its VM is gone)")
