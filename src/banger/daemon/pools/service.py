"""Pools: N guests kept running from one template snapshot, taken by ``vm run --pool``.

A pool (``banger pool set NAME``) is a spec — image and kernel refs (None follows
the default), init mode, vCPUs, memory, work-disk size — and a size. Its filler
(one background task per pool, woken by ``pool set``, every take and bangerd's
start) makes it true, under a ``pool.fill`` operation:

1. Guests that are not ready (stopped, failed, their VMM gone) and guests of a
   stale template are retired: marked ``deleting`` in one conditional update
   that a take cannot race (:meth:`Store.retire_member`), then deleted.
2. A template is made when there is none or its key (:class:`.spec.TemplateInputs`:
   image, kernel, init, sizes, banger's version) no longer matches: one VM is
   booted cold with the pool's spec, snapshotted (``pool.NAME.HEX``, frozen through
   the guest agent, paused, saved, resumed) and kept as the first ready guest.
3. Restores of the template, each re-identified (own MAC, address, hostname,
   machine-id, reseeded RNG: :mod:`banger.daemon.vms.reident`) under a ``vm.create``
   operation of its own, until ``size`` guests are ready; extra ones are retired.

QEMU and plain Firecracker (:mod:`banger.daemon.vms.warm_vmm`; the jailer is
refused, as for snapshots): the same template and restore path on both —
Firecracker's ``snapshot/create`` of the template guest, each guest loaded
onto a tap the helper holds detached until the agent re-identified it.
Firecracker is built to its API and tested against the stand-in with a real
``qemu-ga`` in namespaces as the guest
(``tests/integration/test_pool_firecracker_standin.py``); a real Firecracker
guest is not exercised here. The template key includes the VMM: a pool whose
new VMs move to another VMM gets a new template.

Ready guests stay **running**, not paused: a take then needs no resume, no clock
fix and, above all, no new SSH handshake (a paused guest's held connection is
dropped; a new one costs a second and more under emulation). An idle guest's
vCPU mostly sleeps, so the cost of keeping it running is memory.

A take (``vm create/run --pool P``) is a ``vm.create`` operation: the store hands
one ready guest to the request and renames it in one transaction
(:meth:`Store.take_member`), the filler is woken to replace it, and the guest is
made the owner's: host key pinned under its new name, hostname set over the
held SSH connection (through the agent when none is held: :meth:`Pools._rename`),
``[[file_sync]]`` and the git identity written over the held connection
(:mod:`banger.daemon.vms.live_sync`), the workspace copied over SSH. Its DNS name
follows the store at once. A pool with no ready guest does not fail the request:
the VM is booted cold with the pool's spec (the operation says so).

A take that fails after the rename deletes the guest (it may be half made
into the owner's); a bangerd killed mid-take: startup reconciliation rolls the
``vm.create`` back like any interrupted create.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from banger.api_models import Operation, PoolInfo, PoolSetRequest, VMCreateRequest
from banger.daemon.ops import OpHandle
from banger.daemon.pools import spec
from banger.daemon.pools.fingerprint import sync_fingerprint
from banger.daemon.vms import reident
from banger.daemon.vms.create_workspace import (
    CreateWorkspace,
    Pending,
    after_boot,
    plan_workspace,
)
from banger.daemon.vms.live_sync import sync_running_guest
from banger.daemon.vms.names import (
    FieldProblems,
    check_init,
    check_memory,
    check_name,
    check_vcpus,
    generated_name,
)
from banger.daemon.vms.snapshot_restore import SnapshotRestore
from banger.daemon.vms.snapshots import Snapshots, driver_kind
from banger.daemon.vms.warm_vmm import check_pool_vmm
from banger.errors import BangerError, InvalidArgument, NotFound
from banger.guest import sshkeys
from banger.guest.ssh import SSHError
from banger.store import PoolRecord, SnapshotRecord, VMRecord, VMState

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``pool set NAME`` with no ``--size`` makes a pool of one.
DEFAULT_SIZE = 1
#: Seconds between a take and its pool's refill. A refill is a QEMU restore, a
#: re-identification and an SSH key exchange: under TCG it takes a core for ~10 s,
#: and started at once it slowed the taken guest's first command (a ``true`` over
#: the exec API measured 0.15-0.67 s during a refill, 0.11 s without). ``vm run
#: --pool --rm -- CMD`` with a short CMD is done by then; a longer one shares.
REFILL_AFTER_TAKE = 2.0
#: Request fields a take cannot honour: the pool's guests are already made.
POOL_FIXED = ("image", "kernel", "vcpus", "memory_mib", "work_disk_size", "init")


@dataclass(frozen=True)
class TakePlan:
    pool: PoolRecord
    name: str
    request: VMCreateRequest
    workspace: CreateWorkspace | None


@dataclass(frozen=True)
class Claimed:
    """A ready guest handed to a take: the VM (renamed), its pool name, its template."""

    vm: VMRecord
    was: str
    template_id: str


@dataclass(frozen=True)
class FillPlan:
    """What a fill has to do, decided from the store alone (no operation when nothing)."""

    retire: list[VMRecord]
    template: SnapshotRecord | None
    ready: int

    def work(self, size: int) -> bool:
        return bool(self.retire) or (size > 0 and (self.template is None or self.ready != size))


class Pools:
    def __init__(self, snapshots: Snapshots) -> None:
        self.snapshots = snapshots
        self.restores = SnapshotRestore(snapshots)
        self.vms = snapshots.vms
        self.store = snapshots.store
        self.paths = snapshots.paths
        self._fillers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Pool name → the loop time its filler may start at (``kick(after=)``).
        self._not_before: dict[str, float] = {}
        self._closed = False
        #: Template snapshot id → the file_sync digest its guest was provisioned under
        #: (:mod:`.fingerprint`); kept in memory: after a restart a take syncs anyway.
        self._provisioned: dict[str, str] = {}

    # -- reading -----------------------------------------------------------------------
    def ready(self, vm: VMRecord) -> bool:
        return vm.state == VMState.RUNNING and self.vms.alive(vm)

    def current_template(self, pool: PoolRecord) -> SnapshotRecord | None:
        """The pool's template if it is still valid: made under the key its inputs have now
        (a changed image, kernel, spec or banger makes it stale, and its guests with it)."""
        if pool.template_id is None or pool.template_key != self._template_key(pool):
            return None
        try:
            return self.store.get_snapshot(pool.template_id)
        except NotFound:
            return None

    def info(self, pool: PoolRecord) -> PoolInfo:
        template = self.current_template(pool)
        # Guests of a stale template are never handed out (the filler retires them).
        ready = (
            [vm.name for vm in self.store.pool_members(pool.name) if self.ready(vm)]
            if template is not None
            else []
        )
        if pool.error:
            state = "failed"
        elif pool.size == 0:
            state = "empty"
        elif template is not None and len(ready) >= pool.size:
            state = "ready"
        else:
            state = "filling"
        return PoolInfo(
            name=pool.name,
            image=self._artifact_name(pool.image, "image"),
            kernel=self._artifact_name(pool.kernel, "kernel"),
            size=pool.size,
            vcpus=pool.vcpus,
            memory_mib=pool.memory_mib,
            init=pool.init_mode,
            state=state,
            ready=ready,
            template=template.name if template is not None else None,
            error=pool.error,
            created_at=pool.created_at,
            updated_at=pool.updated_at,
        )

    def _artifact_name(self, ref: str | None, kind: str) -> str:
        """The image (kernel) the pool's next template is made from, by name."""
        try:
            if kind == "image":
                image = self.vms.images.resolve_now(ref)
                return image.name if image else ref or self.vms.config.vm.image
            kernel = self.vms.kernels.resolve_now(ref)
            return kernel.name if kernel else ref or self.vms.config.vm.kernel
        except BangerError:
            return ref or "(gone)"

    async def listing(self) -> list[PoolInfo]:
        return await asyncio.to_thread(lambda: [self.info(p) for p in self.store.list_pools()])

    async def show(self, name: str) -> PoolInfo:
        return await asyncio.to_thread(lambda: self.info(self.store.get_pool(name)))

    # -- changing ----------------------------------------------------------------------
    def _set(self, name: str, request: PoolSetRequest) -> PoolRecord:
        spec.check_pool_name(name)
        try:
            current: PoolRecord | None = self.store.get_pool(name)
        except NotFound:
            current = None
        defaults = self.vms.config.vm

        fields = FieldProblems()
        size = fields.check(spec.check_size, _kept(request.size, current, "size", DEFAULT_SIZE))
        vcpus = fields.check(check_vcpus, _kept(request.vcpus, current, "vcpus", defaults.vcpus))
        memory = fields.check(
            check_memory, _kept(request.memory_mib, current, "memory_mib", defaults.memory_mib)
        )
        init = fields.check(check_init, _kept(request.init, current, "init_mode", defaults.init))
        fields.raise_any()
        assert size is not None and vcpus is not None and memory is not None and init is not None
        image_ref = (
            request.image if request.image is not None else current.image if current else None
        )
        kernel_ref = (
            request.kernel if request.kernel is not None else current.kernel if current else None
        )
        image = self.vms.images.resolve_now(image_ref or None)
        self.vms.kernels.resolve_now(kernel_ref or None)
        if image is not None and init not in self.vms.images.entry(image).init_modes:
            raise InvalidArgument(
                f"init: image {image.name} does not support init mode {init!r}",
                hint=f"it supports: {', '.join(self.vms.images.entry(image).init_modes)}",
            )
        check_pool_vmm(self._new_vm_kind())
        if current is None:
            return self.store.create_pool(
                name=name,
                image=image_ref or None,
                kernel=kernel_ref or None,
                init_mode=init,
                vcpus=vcpus,
                memory_mib=memory,
                work_disk_size=defaults.work_disk_size,
                size=size,
            )
        return self.store.update_pool(
            current.id,
            image=image_ref or None,
            kernel=kernel_ref or None,
            init_mode=init,
            vcpus=vcpus,
            memory_mib=memory,
            size=size,
            error=None,
        )

    def _new_vm_kind(self, vmm: str | None = None) -> str:
        """``qemu``, ``firecracker`` or ``jailed``: what a new VM (``vmm``: one planned on
        that driver) runs on here (:func:`.snapshots.driver_kind`)."""
        drivers = self.vms.pipeline.drivers
        if drivers is None:
            return driver_kind(self.vms.pipeline.driver)
        return driver_kind(drivers.get(vmm if vmm is not None else drivers.choose()[0]))

    async def set(self, name: str, request: PoolSetRequest) -> PoolInfo:
        pool = await asyncio.to_thread(self._set, name, request)
        self.kick(pool.name)
        return await asyncio.to_thread(self.info, pool)

    async def remove(self, name: str) -> Operation:
        pool = await asyncio.to_thread(self.store.get_pool, name)

        async def body(op: OpHandle) -> None:
            await self._stop_filler(name)
            async with self._lock(name):
                await op.stage("remove")
                members = await asyncio.to_thread(self.store.pool_members, name)
                for vm in members:
                    await self._retire(vm, name, op)
                current = await asyncio.to_thread(self.store.get_pool, name)
                await self._drop_template(current, op)
                await asyncio.to_thread(self.store.delete_pool, pool.id)
                await op.event(
                    "info",
                    f"pool {name} removed ({len(members)} guest{'s' if len(members) != 1 else ''}"
                    " and its template)",
                )

        return await self.vms.ops.start("pool.rm", name, body)

    # -- filling -----------------------------------------------------------------------
    def start(self) -> None:
        """At bangerd's start: every pool is brought back to its size."""
        for pool in self.store.list_pools():
            self.kick(pool.name)

    async def close(self) -> None:
        self._closed = True
        for name in list(self._fillers):
            await self._stop_filler(name)

    def guest_stopped(self, vm: VMRecord) -> None:
        """The VMM watch saw a VM's VMM die: a ready guest's pool makes a replacement."""
        if vm.pool is not None:
            self.kick(vm.pool)

    def kick(self, name: str, *, after: float = 0.0) -> None:
        """Wake ``name``'s filler; ``after`` > 0: let it start no sooner than that (seconds)."""
        if self._closed:
            return
        self._not_before[name] = asyncio.get_running_loop().time() + after
        self._wake.setdefault(name, asyncio.Event()).set()
        task = self._fillers.get(name)
        if task is None or task.done():
            self._fillers[name] = asyncio.create_task(self._filler(name), name=f"pool-{name}")

    async def _stop_filler(self, name: str) -> None:
        task = self._fillers.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _filler(self, name: str) -> None:
        wake = self._wake.setdefault(name, asyncio.Event())
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            # A take's refill waits (REFILL_AFTER_TAKE); kicks meanwhile join this pass.
            while (wait := self._not_before.get(name, 0.0) - loop.time()) > 0:
                await asyncio.sleep(wait)
            wake.clear()
            try:
                pool = await asyncio.to_thread(self.store.get_pool, name)
            except NotFound:
                return
            async with self._lock(name):
                plan = await asyncio.to_thread(self._plan, pool)
                if not plan.work(pool.size):
                    continue
                try:
                    async with self.vms.ops.run("pool.fill", name) as op:
                        await self._fill(pool, plan, op)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Kept on the pool (``pool list`` shows it) until the next
                    # ``pool set``; no retry loop: a broken image would boot forever.
                    message = exc.message if isinstance(exc, BangerError) else repr(exc)
                    log.warning("pool %s: fill failed: %s", name, message)
                    with contextlib.suppress(NotFound):
                        await asyncio.to_thread(self.store.update_pool, pool.id, error=message)
                    continue
                with contextlib.suppress(NotFound):
                    await asyncio.to_thread(self.store.update_pool, pool.id, error=None)

    def _template_key(self, pool: PoolRecord) -> str | None:
        """The key a template made now would have; None while the image or kernel is
        still to be built or pulled (then any template is stale)."""
        try:
            image = self.vms.images.resolve_now(pool.image)
            kernel = self.vms.kernels.resolve_now(pool.kernel)
        except BangerError:
            return None
        if image is None or kernel is None:
            return None
        drivers = self.vms.pipeline.drivers
        vmm = drivers.choose()[0] if drivers is not None else self.vms.pipeline.driver.name
        return spec.TemplateInputs(
            image.id,
            kernel.id,
            pool.init_mode,
            pool.vcpus,
            pool.memory_mib,
            pool.work_disk_size,
            vmm,
        ).key()

    def _plan(self, pool: PoolRecord) -> FillPlan:
        members = self.store.pool_members(pool.name)
        template = self.current_template(pool)
        if template is None:
            # A new template: every guest restored from the old one goes.
            return FillPlan(retire=members, template=None, ready=0)
        ready = [vm for vm in members if self.ready(vm)]
        retire = [vm for vm in members if not self.ready(vm)] + ready[pool.size :]
        return FillPlan(retire=retire, template=template, ready=min(len(ready), pool.size))

    async def _fill(self, pool: PoolRecord, plan: FillPlan, op: OpHandle) -> None:
        await op.stage("retire")
        for vm in plan.retire:
            await self._retire(vm, pool.name, op)
        ready = plan.ready
        template = plan.template
        if pool.size == 0:
            return
        if template is None:
            await self._drop_template(pool, op)
            template = await self._make_template(pool, op)
            ready = 1  # the template's own guest
        await op.stage("restore")
        while ready < pool.size:
            await self._add_member(pool, template, op)
            ready += 1
        await op.stage("done")
        await op.event("info", f"pool {pool.name}: {ready} guest(s) ready")

    async def _make_template(self, pool: PoolRecord, op: OpHandle) -> SnapshotRecord:
        await op.stage("template")
        name = spec.member_name(pool.name)
        request = VMCreateRequest(
            name=name,
            image=pool.image,
            kernel=pool.kernel,
            vcpus=pool.vcpus,
            memory_mib=pool.memory_mib,
            work_disk_size=pool.work_disk_size,
            init=pool.init_mode,
        )
        plan = await asyncio.to_thread(self.vms.plan, request)
        check_pool_vmm(self._new_vm_kind(plan.vmm))
        plan = dataclasses.replace(plan, pool=pool.name)
        # Taken before the guest is provisioned: a host change after it only makes a
        # take sync when it need not, never skip a sync it needs.
        provisioned = await asyncio.to_thread(self._fingerprint)
        async with self.vms.ops.run("vm.create", name) as create_op:
            await op.event("info", f"template guest {name}: booting (operation {create_op.id})")
            await self.vms._create(plan, create_op)
        vm = await asyncio.to_thread(self.store.get_vm_by_name, name)
        if vm.config.agent_channel is not True or vm.config.agent_seen is False:
            raise BangerError(
                f"pool {pool.name}: the guest agent of its image does not answer; a pool's "
                "guests take their own addresses through it",
                hint="use an image with qemu-guest-agent (banger's images have it)",
            )
        snapshot = spec.template_name(pool.name)
        async with self.vms.locks.hold(vm.id):
            current = await asyncio.to_thread(self.store.get_vm, vm.id)
            await self.snapshots._create(current, snapshot, False, op)
        record = await asyncio.to_thread(self.store.resolve_snapshot, snapshot)
        key = spec.TemplateInputs(
            vm.image_id or "", vm.kernel_id or "", vm.init_mode, vm.vcpus, vm.memory_mib,
            vm.work_disk_size, vm.vmm,
        ).key()  # fmt: skip
        await asyncio.to_thread(
            self.store.update_pool, pool.id, template_id=record.id, template_key=key
        )
        if provisioned is not None:
            self._provisioned[record.id] = provisioned
        await op.event("info", f"template {snapshot} made from {name} ({record.size >> 20} MiB)")
        return record

    async def _add_member(self, pool: PoolRecord, template: SnapshotRecord, op: OpHandle) -> None:
        name = spec.member_name(pool.name)
        await asyncio.to_thread(self.restores.plan, template.id, name)
        self.snapshots.busy.add(template.id)  # no snapshot rm under a restore
        try:
            # Its own "vm.create" operation: reconciliation rolls an interrupted one back.
            async with self.vms.ops.run("vm.create", name) as create_op:
                await op.event("info", f"guest {name}: restoring (operation {create_op.id})")
                await self.restores._restore(template, name, create_op, pool=pool.name)
        finally:
            self.snapshots.busy.discard(template.id)

    async def _retire(self, vm: VMRecord, pool: str, op: OpHandle) -> None:
        """Delete a pool's guest unless a take got it first."""
        if not await asyncio.to_thread(self.store.retire_member, vm.id, pool):
            return
        try:
            async with self.vms.locks.hold(vm.id):
                current = await asyncio.to_thread(self.store.get_vm, vm.id)
                await self.vms._delete(current, op, force=True)
        except NotFound:
            return
        await op.event("info", f"guest {vm.name} removed")

    async def _drop_template(self, pool: PoolRecord, op: OpHandle) -> None:
        if pool.template_id is None:
            return
        with contextlib.suppress(NotFound):
            await self.snapshots.remove(pool.template_id)
            await op.event("info", f"pool {pool.name}: old template removed")
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(
                self.store.update_pool, pool.id, template_id=None, template_key=None
            )

    # -- taking ------------------------------------------------------------------------
    def plan_take(self, request: VMCreateRequest) -> TakePlan:
        """Every check of ``vm create --pool`` (a 4xx here takes nothing)."""
        assert request.pool is not None
        for field in POOL_FIXED:
            if getattr(request, field) is not None:
                raise InvalidArgument(
                    f"{field}: a VM from pool {request.pool} has the pool's; leave {field} out",
                    hint=f"banger pool set {request.pool} --… changes what its guests are",
                )
        if not request.start:
            raise InvalidArgument(
                "start: a VM taken from a pool is already running; it cannot be created stopped"
            )
        try:
            pool = self.store.get_pool(request.pool)
        except NotFound:
            raise NotFound(
                f"pool: no pool named {request.pool!r}", hint="banger pool list shows the pools"
            ) from None
        name = check_name(request.name) if request.name is not None else generated_name()
        self.vms.refuse_taken_name(name)
        workspace = plan_workspace(request.workspace) if request.workspace else None
        return TakePlan(pool, name, request, workspace)

    async def create(self, request: VMCreateRequest) -> Operation:
        plan = await asyncio.to_thread(self.plan_take, request)

        async def body(op: OpHandle) -> None:
            await self._take(plan, op)

        return await self.vms.ops.start("vm.create", plan.name, body)

    def _fingerprint(self) -> str | None:
        return sync_fingerprint(self.vms.config.file_sync, home=Path.home())

    def _claim(self, plan: TakePlan) -> Claimed | None:
        pool = self.store.get_pool(plan.pool.name)
        template = self.current_template(pool)
        if template is None:
            return None  # its guests are stale: the take boots one with the new spec
        for vm in self.store.pool_members(pool.name):
            if not self.ready(vm):
                continue
            with contextlib.suppress(NotFound):
                taken = self.store.take_member(vm.id, plan.pool.name, plan.name)
                return Claimed(taken, vm.name, template.id)
        return None

    async def _take(self, plan: TakePlan, op: OpHandle) -> None:
        await op.stage("take")
        claimed = await asyncio.to_thread(self._claim, plan)
        # a replacement is made in the background, once the taken guest's first work is done
        self.kick(plan.pool.name, after=REFILL_AFTER_TAKE)
        if claimed is None:
            await op.event(
                "notice",
                f"pool {plan.pool.name} has no ready guest: booting {plan.name} cold "
                "with the pool's spec",
            )
            pool = await asyncio.to_thread(self.store.get_pool, plan.pool.name)  # its spec now
            request = plan.request.model_copy(
                update={
                    "pool": None,
                    "image": pool.image,
                    "kernel": pool.kernel,
                    "vcpus": pool.vcpus,
                    "memory_mib": pool.memory_mib,
                    "work_disk_size": pool.work_disk_size,
                    "init": pool.init_mode,
                }
            )
            create = await asyncio.to_thread(self.vms.plan, request)
            await self.vms._create(create, op)
            return
        vm, was = claimed.vm, claimed.was
        await op.event(
            "info",
            f"VM {vm.name} has id {vm.id}: guest {was} of pool {plan.pool.name}",
            {"vm": vm.id},
        )
        async with self.vms.locks.hold(vm.id):
            try:
                await self._make_own(vm, was, claimed.template_id, plan, op)
            except BaseException:
                await asyncio.shield(self._discard(vm, op))
                raise
        await op.stage("running")

    async def _make_own(
        self, vm: VMRecord, was: str, template_id: str, plan: TakePlan, op: OpHandle
    ) -> None:
        """The ready guest becomes the owner's ``vm.name``: names, files, workspace."""
        await op.stage("identity")
        assert vm.ip is not None
        host = await asyncio.to_thread(sshkeys.read_public_key, self.paths.vm_host_key(vm.id))
        await asyncio.to_thread(sshkeys.unpin, self.paths.known_hosts, [was])
        await asyncio.to_thread(
            sshkeys.pin_host_key, self.paths.known_hosts, [vm.name, str(vm.ip)], host.public_key
        )
        how = await self._rename(vm, op)
        await op.event(
            "info", f"guest hostname {vm.name} ({how}); {vm.name}.{self._domain()} resolves"
        )
        await op.stage("file_sync")
        now = await asyncio.to_thread(self._fingerprint)
        if now is not None and now == self._provisioned.get(template_id):
            await op.event("info", "file_sync and git identity unchanged since the guest was made")
        else:
            await self._sync(vm, op)
        if plan.workspace is not None:
            await after_boot(
                self.vms.pipeline, self.store, self.vms.transfers, vm.id, plan.workspace,
                Pending(over_ssh=f"a running guest from pool {plan.pool.name}"), op,
            )  # fmt: skip
        await asyncio.to_thread(self.store.update_vm, vm.id, last_error=None)

    async def _rename(self, vm: VMRecord, op: OpHandle) -> str:
        """Set the guest's hostname; how it reached the guest (for the operation's events).

        Over the ready guest's held SSH connection when it has one, through the
        guest's command runner started on it (:meth:`Runners.run_quick`; an sshd
        session where the guest has none): a tenth of a second or less under TCG,
        while the agent's ``guest-exec`` is spawned and then polled (0.4-0.7 s
        measured for a take). The agent stays the way when no connection is held
        (bangerd restarted since the guest was made: a new SSH login would cost a
        key exchange, 1-3 s) or the connection fails; the script is idempotent, so
        running it again through the agent after a lost connection is safe.
        """
        argv = reident.rename_argv(vm.name)
        conns = self.vms.pipeline.conns
        if conns.held(vm.id):
            try:
                result = await conns.runners.run_quick(vm, argv, timeout=reident.RENAME_TIMEOUT)
            except SSHError as exc:
                await op.event("info", f"hostname over SSH failed ({exc.message}): using the agent")
            else:
                reident.check_renamed(vm.name, result.exit_code, result.stdout, result.stderr)
                return "over the held SSH connection"
        # The VM's own agent endpoint: QEMU's virtio-serial socket, Firecracker's vsock.
        agent = await self.vms.pipeline.agent_endpoint(vm).connect(timeout=30.0)
        async with agent:
            await reident.rename(agent, vm.name)
        return "through the guest agent"

    async def _sync(self, vm: VMRecord, op: OpHandle) -> None:
        """``[[file_sync]]`` and the git identity as the host has them now, over SSH."""
        async with self.vms.pipeline.conns.channel(vm) as conn:
            synced = await sync_running_guest(
                conn, self.vms.config.file_sync, home=Path.home(), vm=vm.name
            )
        for warning in synced.warnings:
            await op.event("warning", warning)
        for notice in synced.notices:
            await op.event("notice", notice)
        await op.event("info", f"over SSH: {synced.summary}")

    def _domain(self) -> str:
        return self.vms.config.network.dns_domain

    async def _discard(self, vm: VMRecord, op: OpHandle) -> None:
        try:
            current = await asyncio.to_thread(self.store.get_vm, vm.id)
            await self.vms._delete(current, op, force=True)
        except Exception as exc:  # the take's own failure is the one reported
            await op.event("warning", f"removing {vm.name} after the failed take failed: {exc}")


def _kept(given: T | None, current: PoolRecord | None, field: str, default: T) -> T:
    """``pool set``'s rule: a value given wins, else the pool's own, else the default."""
    if given is not None:
        return given
    if current is not None:
        kept: T = getattr(current, field)
        return kept
    return default
