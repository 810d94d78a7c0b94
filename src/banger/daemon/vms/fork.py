"""``banger vm fork SRC [-n N] [--name PREFIX]``: N running copies of a running VM.

A fork is one internal snapshot of the source and N restores from it, each
re-identified (:mod:`.snapshot_restore`, :mod:`.reident`):

1. ``snapshot`` (the source's lock held, nothing else): the guest's
   filesystems are frozen through its agent, it pauses, its memory and device
   state are saved once and its disks copied once into the internal snapshot
   (its root overlay's copy becomes the read-only frozen layer,
   :mod:`banger.disk.layers`), and it resumes and thaws at once — before any
   child exists; the source goes on writing its own overlay. The source's lock
   is released there.
2. ``PREFIX-1`` … ``PREFIX-N``, up to :data:`PARALLEL_CHILDREN` at once: a
   restore of that snapshot (an empty overlay on the frozen layer, a copy of
   the work disk, lease, tap, MAC, hostname, machine-id, reseeded RNG; link
   up only then; SSH confirms it). The source's session records (running or
   exited) are copied to the child: its guest runs the same tmux sessions,
   and ``session list`` checks them against it. Each child is made under a
   ``vm.create`` operation of its own (its progress is
   there; the fork's says which).
3. The internal snapshot is removed: each child's directory holds its own
   hard link of the frozen layer (and of the layers below it), so the layer's
   data lives on until the last child goes; nothing of theirs needs the
   snapshot's directory.

Work-disk copies (and the one copy of the source's root overlay) are ``cp``
with copy-on-write where the state directory's filesystem has it (coreutils 9
clones before it copies; a reflink costs nothing) and sparse copies
otherwise; the start answer says which (:func:`disk_copies`). A child's root
costs an empty qcow2 overlay whatever the source wrote.

All or nothing: when a child fails, its own restore undoes itself, the
children still being restored are cancelled (each undoes itself the same
way) and the ones already made are deleted — a failed fork leaves no VM
behind, and the same command can be run again. The source is resumed on
every path (the snapshot step resumes it before it returns or raises). A
bangerd killed mid-fork: startup reconciliation rolls back every child still
being created, like any interrupted create; children already running stay;
the internal snapshot
(``fork.<hex>``, a name no user can give) is removed by the same reconciliation
(no fork is in flight at startup) and reported. Both it and the start of every
fork (:meth:`Fork.sweep`, which keeps the snapshots of forks under way) use
:func:`remove_internal_snapshots`.

QEMU and plain Firecracker VMs with the guest agent channel can be forked
(:mod:`.warm_vmm`); a child takes its new identity through the agent.

Firecracker: the snapshot step is ``PATCH /vm Paused``, ``PUT
/snapshot/create`` (Full) once, copies of the raw root and work disks while
paused, resume (:mod:`.snapshots`); each child gets copies of both disks —
a reflink where the filesystem has it, else a sparse copy (the same
:func:`banger.disk.workdisk.sparse_copy` as QEMU's work disk; the start
answer says which) — and is restored onto a tap held detached by the helper
until re-identified (:mod:`.snapshot_restore`). Its Firecracker loads the
snapshot while the source's disk files, still at the paths the snapshot
recorded, are open in the running source, and re-points each drive at the
child's own copy before the guest resumes. Tested against the Firecracker
stand-in with a real ``qemu-ga`` in namespaces per child
(``tests/integration/test_fork_firecracker_standin.py``); a real Firecracker
guest (KVM, vsock, a real memory restore: the stand-in restores no memory)
is not exercised here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Set
from dataclasses import dataclass, field

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.vms import snapshot_files as files
from banger.daemon.vms.names import check_name
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots, driver_kind
from banger.daemon.vms.warm_vmm import check_forkable
from banger.disk import layers
from banger.errors import BangerError, InvalidArgument, NotFound
from banger.hostinfo import reflink_supported
from banger.paths import Paths
from banger.store import SessionRecord, SessionState, SnapshotRecord, VMRecord, VMState

#: The most children one fork makes (each is a whole VM: memory, a lease, a tap).
MAX_CHILDREN = 16
#: The internal snapshot's name: ``fork.<hex>``, which no user can choose (snapshot
#: names are DNS labels), so :meth:`Fork.sweep` can tell a leftover from a user's.
INTERNAL_PREFIX = "fork."
#: Children restored at once: each restore is mostly waiting (QEMU loading the
#: state, the guest re-identifying, SSH), and each child's root is only an
#: empty overlay, so a few together share the cores without a copy each.
PARALLEL_CHILDREN = 4
#: ``disk_copies`` values.
REFLINK = "reflink"
SPARSE = "sparse copy"


def child_names(source: str, count: int, prefix: str | None) -> list[str]:
    """``PREFIX-1`` … ``PREFIX-N`` (default prefix ``SRC-fork``), each a valid VM name."""
    if isinstance(count, bool) or count < 1 or count > MAX_CHILDREN:
        raise InvalidArgument(
            f"count: must be 1-{MAX_CHILDREN}, got {count}",
            hint=f"fork at most {MAX_CHILDREN} children at a time",
        )
    base = prefix if prefix is not None else f"{source}-fork"
    names = [f"{base}-{k}" for k in range(1, count + 1)]
    for name in names:
        try:
            check_name(name)
        except BangerError as exc:
            raise InvalidArgument(
                f"name: the child name {name!r} is not a DNS label"
                + ("" if prefix is not None else f" (from the source name {source!r})"),
                hint="pick a --name PREFIX of lowercase letters, digits and inner hyphens, "
                "short enough for PREFIX-N to fit 63 characters",
            ) from exc
    return names


def disk_copies(where: Paths) -> str:
    """How the frozen layer and the children's disks are copied on this state directory."""
    parent = files.snapshots_dir(where)
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return REFLINK if reflink_supported(parent).ok else SPARSE


def first_failure(exc: BaseException) -> BaseException:
    """The error a failed fork reports: a task group's first child failure, else ``exc``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass(frozen=True)
class Swept:
    """What :func:`remove_internal_snapshots` did: what it removed, and what not (and why)."""

    removed: list[SnapshotRecord] = field(default_factory=list)
    failed: list[tuple[SnapshotRecord, str]] = field(default_factory=list)


async def remove_internal_snapshots(snapshots: Snapshots, keep: Set[str] = frozenset()) -> Swept:
    """Remove every internal fork snapshot (record and files) except those named in ``keep``.

    A fork removes its own when it ends; one left over is a bangerd killed
    mid-fork's. Removal is :meth:`Snapshots.remove` (record, then files), which
    also refuses a snapshot a restore is reading (``busy``): that one is
    skipped here, not failed. Called by :meth:`Fork.sweep` (``keep``: the
    forks under way) and by startup reconciliation (nothing in flight).
    """
    swept = Swept()
    for snap in await asyncio.to_thread(snapshots.store.list_snapshots):
        if not snap.name.startswith(INTERNAL_PREFIX) or snap.name in keep:
            continue
        if snap.id in snapshots.busy:
            continue
        try:
            await snapshots.remove(snap.id)
        except NotFound:
            continue  # removed meanwhile (another fork's sweep): what we wanted
        except BangerError as exc:
            swept.failed.append((snap, exc.message))
        else:
            swept.removed.append(snap)
    return swept


@dataclass(frozen=True)
class ForkPlan:
    source: VMRecord
    children: list[str]
    disk_copies: str


class Fork:
    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        self.restores = SnapshotRestore(snapshots)
        self.vms = snapshots.vms
        self.store = snapshots.store
        self.paths = snapshots.paths
        #: Names of the internal snapshots of forks under way (:meth:`sweep` keeps them).
        self.in_flight: set[str] = set()

    def plan(self, ref: str, count: int, prefix: str | None) -> ForkPlan:
        """Every check that needs no operation: a refusal here creates nothing."""
        try:
            vm = self.store.resolve_vm(ref)
        except NotFound:
            raise InvalidArgument(
                f"source: no VM named {ref!r}", hint="banger vm list shows the VMs"
            ) from None
        names = child_names(vm.name, count, prefix)
        if vm.state != VMState.RUNNING or not self.vms.alive(vm):
            raise InvalidArgument(
                f"source: VM {vm.name} is {vm.state.value}; only a running VM can be forked "
                "(its memory is what the children continue from)",
                hint=f"banger vm start {vm.name}"
                if vm.state != VMState.PAUSED
                else f"banger vm resume {vm.name}",
            )
        check_forkable(
            vm.name, driver_kind(self.vms.pipeline.driver_for(vm)), vm.config.agent_channel
        )
        if vm.config.agent_seen is False:
            raise InvalidArgument(
                f"source: VM {vm.name}'s guest agent is not answering; a fork's children "
                "take new addresses through it",
                hint="install qemu-guest-agent in the image (banger's images have it)",
            )
        for name in names:
            try:
                self.store.get_vm_by_name(name)
            except NotFound:
                continue
            raise InvalidArgument(
                f"name: a VM named {name!r} already exists",
                hint="pick another --name PREFIX, or remove it first",
            )
        return ForkPlan(vm, names, disk_copies(self.paths))

    async def start(self, ref: str, count: int, prefix: str | None) -> tuple[Operation, ForkPlan]:
        plan = await asyncio.to_thread(self.plan, ref, count, prefix)
        await self.sweep()

        async def body(op: OpHandle) -> None:
            await self._fork(plan, op)

        return await self.vms.ops.start("vm.fork", plan.source.name, body), plan

    async def _fork(self, plan: ForkPlan, op: OpHandle) -> None:
        internal = f"{INTERNAL_PREFIX}{secrets.token_hex(6)}"
        self.in_flight.add(internal)
        try:
            await self._fork_from(plan, internal, op)
        finally:
            self.in_flight.discard(internal)

    async def _fork_from(self, plan: ForkPlan, internal: str, op: OpHandle) -> None:
        source = plan.source
        async with self.vms.locks.hold(source.id):
            current = await asyncio.to_thread(self.store.get_vm, source.id)
            if current.state != VMState.RUNNING:
                raise InvalidArgument(f"source: VM {current.name} is {current.state.value} now")
            # Pause, save, copy, resume (and thaw) — the source runs again when this returns.
            held = time.monotonic()
            await self.snapshots._create(current, internal, False, op)
            held = time.monotonic() - held
        snap = await asyncio.to_thread(self.store.resolve_snapshot, internal)
        self.snapshots.busy.add(snap.id)  # no snapshot-rm while children are restored from it
        try:
            made = await self._children(plan, snap, held, op)
        finally:
            self.snapshots.busy.discard(snap.id)
            await asyncio.shield(self._remove_snapshot(snap.id, op))
        await op.stage("done")
        await op.event(
            "info",
            f"forked {source.name} into {', '.join(made)} (disks by {plan.disk_copies})",
            {"children": made, "disk_copies": plan.disk_copies, "source_held_s": held},
        )

    async def _children(
        self, plan: ForkPlan, snap: SnapshotRecord, held: float, op: OpHandle
    ) -> list[str]:
        """Restore the children, up to :data:`PARALLEL_CHILDREN` at once; on a failure,
        remove every one made and re-raise the first failure."""
        source = plan.source
        # The children's guests hold the source's tmux sessions: so do their records.
        sessions = [
            s
            for s in await asyncio.to_thread(self.store.list_sessions, source.id)
            if s.state in (SessionState.RUNNING, SessionState.EXITED)
        ]
        # QEMU: each child's root is an empty overlay on the frozen layer; Firecracker's
        # raw root is copied for each child like the work disk.
        roots = (
            "overlays on its frozen layer"
            if layers.is_layer(str(snap.meta.get("root_file", "")))
            else f"by {plan.disk_copies}"
        )
        await op.event(
            "info",
            f"VM {source.name} is running again after {held:.1f}s (freeze, save, copy, "
            f"resume, thaw); internal snapshot {snap.name} ({snap.size >> 20} MiB); "
            f"restoring {len(plan.children)} children (roots: {roots}; work disks by "
            f"{plan.disk_copies})",
        )
        made: list[str] = []
        slots = asyncio.Semaphore(PARALLEL_CHILDREN)

        async def child(name: str) -> None:
            async with slots:
                await asyncio.to_thread(self.restores.plan, snap.id, name)
                # Each child is made under a "vm.create" operation of its own, so that
                # startup reconciliation rolls back a half-made child like any
                # interrupted create (it matches the operation's target to the VM).
                async with self.vms.ops.run("vm.create", name) as child_op:
                    await op.event("info", f"child {name}: restoring (operation {child_op.id})")
                    await self.restores._restore(snap, name, child_op)
                made.append(name)
                await asyncio.to_thread(self._carry_sessions, name, sessions)
                await op.event("info", f"child {name} running", {"child": name})

        try:
            # A failed child cancels the others (each unwinds its own restore).
            async with asyncio.TaskGroup() as group:
                for name in plan.children:
                    group.create_task(child(name))
            missing = [name for name in plan.children if name not in made]
            if missing:  # a child's own operation cancelled: its task ended, the group not
                raise BangerError(f"child {missing[0]}: its restore was cancelled")
        except BaseException as exc:
            await asyncio.shield(self._remove_children(made, op))
            raise first_failure(exc) from None
        return [name for name in plan.children if name in made]

    async def sweep(self) -> list[str]:
        """Remove internal snapshots no fork is using (a bangerd killed mid-fork left them)."""
        swept = await remove_internal_snapshots(self.snapshots, keep=self.in_flight)
        return [snap.name for snap in swept.removed]

    def _carry_sessions(self, child: str, sessions: list[SessionRecord]) -> None:
        """The source's session records as the child's (its guest runs the same tmux)."""
        vm = self.store.get_vm_by_name(child)
        for s in sessions:
            record = self.store.create_session(vm.id, s.name, s.command, state=s.state)
            if s.state == SessionState.EXITED:
                self.store.update_session(record.id, exit_status=s.exit_status, ended_at=s.ended_at)

    async def _remove_children(self, names: list[str], op: OpHandle) -> None:
        """Undo of the children already made: a failed fork leaves no VM behind."""
        for name in reversed(names):
            try:
                vm = await asyncio.to_thread(self.store.get_vm_by_name, name)
                async with self.vms.locks.hold(vm.id):
                    await self.vms._delete(vm, op, force=True)
            except Exception as exc:  # the fork's own failure is the one reported
                await op.event("warning", f"removing child {name} failed: {exc}")

    async def _remove_snapshot(self, snapshot_id: str, op: OpHandle) -> None:
        try:
            await self.snapshots.remove(snapshot_id)
        except Exception as exc:
            await op.event("warning", f"removing the fork's internal snapshot failed: {exc}")
