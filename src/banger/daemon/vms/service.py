"""VMService: create, start, stop, restart, delete and describe VMs.

Every lifecycle change runs as an operation (``ops.start``), returns at once,
and streams its stages; it holds the VM's lock (:mod:`.locks`) throughout.
Request checks (name, sizes, init mode, explicit image/kernel) run before the
operation starts, so bad input is a one-line 400 and nothing is created.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from banger.api_models import BootPhase, Operation, SSHInfo, VMCreateRequest, VMDetail
from banger.config import Config
from banger.daemon.images_svc import ImageService
from banger.daemon.kernels_svc import KernelService
from banger.daemon.ops import Operations, OpHandle
from banger.daemon.vms import agent_use
from banger.daemon.vms.agent_use import agent_state
from banger.daemon.vms.create_workspace import (
    CreateWorkspace,
    Pending,
    after_boot,
    before_boot,
    plan_workspace,
)
from banger.daemon.vms.locks import VMLocks
from banger.daemon.vms.names import (
    FieldProblems,
    check_init,
    check_memory,
    check_name,
    check_vcpus,
    check_work_disk_size,
    generated_name,
)
from banger.daemon.vms.pipeline import Pipeline
from banger.daemon.vms.transfers import Transfers
from banger.daemon.vms.undo import UndoStack
from banger.disk.cow import RootDisk
from banger.errors import BangerError, Conflict, InvalidArgument, NotFound
from banger.guest import sshkeys
from banger.guest.boot_timeline import phases_from_json
from banger.images.oci.config import ImageConfig
from banger.images.oci.guestenv import GuestEnv, guest_env
from banger.images.publish import read_image
from banger.kernels.store import read_kernel
from banger.net.taps import tap_name
from banger.procinfo import is_same_process
from banger.rmtree import discard_tree
from banger.store import ImageRecord, KernelRecord, VMConfig, VMRecord, VMState
from banger.vmm.base import VMMProcess

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: How long a guest gets to power off after being asked, before the VMM is stopped.
GUEST_POWEROFF_WAIT = 20.0


@dataclass(frozen=True)
class CreatePlan:
    name: str
    image: str | None
    kernel: str | None
    vcpus: int
    memory_mib: int
    work_disk_size: int
    init: str
    start: bool
    vmm: str = "qemu"
    vmm_reason: str = "the only driver"
    #: written onto the work disk before the first boot (:mod:`.create_workspace`)
    workspace: CreateWorkspace | None = None
    #: the pool whose ready guest (or template) this VM is made to be
    pool: str | None = None


class VMService:
    def __init__(
        self,
        config: Config,
        ops: Operations,
        kernels: KernelService,
        images: ImageService,
        pipeline: Pipeline,
    ) -> None:
        self.config = config
        self.ops = ops
        self.kernels = kernels
        self.images = images
        self.pipeline = pipeline
        self.store = pipeline.store
        self.paths = pipeline.paths
        self.locks = VMLocks()
        #: workspace transfers' own per-VM locks (stop/rm cancel them, never wait)
        self.transfers = Transfers()

    # -- reading -----------------------------------------------------------------------
    def detail(self, vm: VMRecord) -> VMDetail:
        image_name = kernel_name = None
        if vm.image_id:
            image_name = _name_or_none(lambda: self.store.get_image(vm.image_id or "").name)
        if vm.kernel_id:
            kernel_name = _name_or_none(lambda: self.store.get_kernel(vm.kernel_id or "").name)
        return VMDetail(
            id=vm.id,
            name=vm.name,
            state=vm.state.value,
            image=vm.image_id,
            image_name=image_name,
            kernel=vm.kernel_id,
            kernel_name=kernel_name,
            vmm=vm.vmm,
            vmm_reason=vm.config.vmm_reason,
            accelerator=vm.config.accelerator,
            agent=agent_state(vm.config),
            init_mode=vm.init_mode,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            work_disk_size=vm.work_disk_size,
            root_strategy=vm.root_strategy,
            ip=str(vm.ip) if vm.ip else None,
            mac=vm.mac,
            tap=vm.tap,
            pid=vm.pid,
            created_at=vm.created_at,
            updated_at=vm.updated_at,
            last_error=vm.last_error,
            console_log=str(self.paths.vm_console_log(vm.id)),
            vm_dir=str(self.paths.vm_dir(vm.id)),
            boot_timeline=[
                BootPhase(**phase.to_json())
                for phase in phases_from_json(list(vm.config.boot_timeline or ()))
            ],
        )

    async def show(self, ref: str) -> VMDetail:
        return await asyncio.to_thread(lambda: self.detail(self.store.resolve_vm(ref)))

    async def ssh_info(self, ref: str) -> SSHInfo:
        vm = await asyncio.to_thread(self.store.resolve_vm, ref)
        if vm.state != VMState.RUNNING or vm.ip is None:
            raise Conflict(
                f"VM {vm.name} is {vm.state.value}, not running",
                hint=f"start it first: banger vm start {vm.name}",
            )
        guest = await asyncio.to_thread(self._image_defaults, vm)
        return SSHInfo(
            vm=vm.name,
            host=str(vm.ip),
            known_hosts=str(self.paths.known_hosts),
            client_key=str(self.paths.ssh_key),
            workdir=guest.working_dir or None if guest else None,
            run_as=guest.user or None if guest else None,
        )

    def _image_defaults(self, vm: VMRecord) -> GuestEnv | None:
        """The OCI config of the VM's image, as the guest applies it."""
        if vm.image_id is None:
            return None
        try:
            config = read_image(self.paths.image_dir(vm.image_id)).config
        except (OSError, BangerError):
            return None
        return guest_env(ImageConfig(
            tuple(str(e) for e in config.get("Env") or ()),
            str(config.get("WorkingDir") or ""),
            str(config.get("User") or ""),
        ))  # fmt: skip

    # -- create --------------------------------------------------------------------
    def plan(self, request: VMCreateRequest) -> CreatePlan:
        """Check the whole request (a 400 or 404 here creates nothing)."""
        defaults = self.config.vm
        # Every field is checked before any is refused: a request with a bad
        # name and vcpus -1 hears about both.
        fields = FieldProblems()
        name = fields.check(check_name, request.name) if request.name is not None else None
        vcpus = fields.check(
            check_vcpus, request.vcpus if request.vcpus is not None else defaults.vcpus
        )
        memory = fields.check(
            check_memory,
            request.memory_mib if request.memory_mib is not None else defaults.memory_mib,
        )
        size = fields.check(
            check_work_disk_size,
            request.work_disk_size
            if request.work_disk_size is not None
            else defaults.work_disk_size,
        )
        init = fields.check(check_init, request.init if request.init is not None else defaults.init)
        fields.raise_any()
        assert vcpus is not None and memory is not None and size is not None and init is not None
        name = name or generated_name()
        self.refuse_taken_name(name)
        image = self.images.resolve_now(request.image)
        self.kernels.resolve_now(request.kernel)
        if image is not None:
            modes = self.images.entry(image).init_modes
            if init not in modes:
                raise InvalidArgument(
                    f"init: image {image.name} does not support init mode {init!r}",
                    hint=f"it supports: {', '.join(modes)}",
                )
        vmm, vmm_reason = (
            self.pipeline.drivers.choose() if self.pipeline.drivers else ("qemu", "the only driver")
        )
        workspace = plan_workspace(request.workspace) if request.workspace else None
        return CreatePlan(
            name, request.image, request.kernel, vcpus, memory, size, init, request.start,
            vmm, vmm_reason, workspace,
        )  # fmt: skip

    def refuse_taken_name(self, name: str) -> None:
        """A new VM's name must be free (a 409 naming the field, before anything is made)."""
        try:
            self.store.get_vm_by_name(name)
        except NotFound:
            return
        raise Conflict(f"name: a VM named {name!r} already exists", hint="pick another name")

    async def create(self, request: VMCreateRequest) -> Operation:
        plan = await asyncio.to_thread(self.plan, request)

        async def body(op: OpHandle) -> None:
            await self._create(plan, op)

        return await self.ops.start("vm.create", plan.name, body)

    async def _create(self, plan: CreatePlan, op: OpHandle) -> None:
        await op.stage("resolve")
        image = await self.images.ensure(plan.image, op)
        kernel = await self.kernels.ensure(plan.kernel, op)
        await op.event(
            "info",
            f"image {image.name}, kernel {kernel.name}, init {plan.init}, "
            f"vmm {plan.vmm} ({plan.vmm_reason})",
        )
        undo = UndoStack()
        vm = await asyncio.to_thread(
            self.store.create_vm,
            name=plan.name,
            image_id=image.id,
            kernel_id=kernel.id,
            vmm=plan.vmm,
            config=VMConfig(vmm_reason=plan.vmm_reason),
            init_mode=plan.init,
            vcpus=plan.vcpus,
            memory_mib=plan.memory_mib,
            work_disk_size=plan.work_disk_size,
            pool=plan.pool,
        )
        await op.event("info", f"VM {vm.name} has id {vm.id}", {"vm": vm.id})

        async def delete_row() -> None:
            await asyncio.to_thread(self._forget_row, vm)

        undo.push("VM record", delete_row)
        async with self.locks.hold(vm.id):
            try:
                image_entry = await asyncio.to_thread(read_image, self.paths.image_dir(image.id))
                await self.pipeline.root_disk(vm, image_entry, op, undo)
                await self.pipeline.prepare_work_disk(vm, image_entry, op, undo)
                pending: Pending | None = None
                if plan.workspace is not None:
                    pending = await before_boot(
                        self.pipeline, vm, plan.workspace, op, will_boot=plan.start
                    )
                vm = await asyncio.to_thread(self.store.get_vm, vm.id)
                if plan.start:
                    await self._boot(vm, kernel, op, undo)
                    if plan.workspace is not None and pending is not None:
                        await after_boot(self.pipeline, self.store, self.transfers, vm.id,
                                         plan.workspace, pending, op)  # fmt: skip
                else:
                    await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.STOPPED)
            except BaseException:
                await self._unwind(undo, op)
                raise
            undo.discard()

    def _forget_row(self, vm: VMRecord) -> None:
        """Undo of the record stage: the lease goes with the row, the pins by hand."""
        current = self.store.get_vm(vm.id)
        names = [current.name] + ([str(current.ip)] if current.ip else [])
        sshkeys.unpin(self.paths.known_hosts, names)
        self.store.delete_vm(vm.id)

    async def _unwind(self, undo: UndoStack, op: OpHandle) -> None:
        failures = await asyncio.shield(undo.unwind())
        if failures:
            await op.event("warning", "cleanup left: " + "; ".join(failures))

    async def _boot(
        self, vm: VMRecord, kernel: KernelRecord, op: OpHandle, undo: UndoStack
    ) -> None:
        entry = await asyncio.to_thread(read_kernel, self.paths.kernel_dir(kernel.id))
        root = self.pipeline.root_disk_of(vm)
        await self.pipeline.boot(vm, entry, root, op, undo)
        await op.stage("running")
        await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.RUNNING, last_error=None)

    # -- start / stop / restart / delete ---------------------------------------------
    async def _vm_op(
        self, kind: str, ref: str, work: Callable[[VMRecord, OpHandle], Awaitable[None]]
    ) -> Operation:
        vm = await asyncio.to_thread(self.store.resolve_vm, ref)

        async def body(op: OpHandle) -> None:
            async with self.locks.hold(vm.id):
                current = await asyncio.to_thread(self.store.get_vm, vm.id)
                await work(current, op)

        return await self.ops.start(kind, vm.name, body)

    async def start(self, ref: str) -> Operation:
        return await self._vm_op("vm.start", ref, self._start)

    async def _start(self, vm: VMRecord, op: OpHandle) -> None:
        if self.alive(vm):
            raise Conflict(f"VM {vm.name} is already running")
        if vm.state not in (VMState.STOPPED, VMState.FAILED):
            raise Conflict(f"VM {vm.name} is {vm.state.value}; it can be started when stopped")
        if vm.kernel_id is None:
            raise NotFound(f"VM {vm.name} has no kernel recorded")
        kernel = await asyncio.to_thread(self.store.get_kernel, vm.kernel_id)
        undo = UndoStack()
        try:
            await self.pipeline.sync_work_disk(vm, op)
            await self._boot(vm, kernel, op, undo)
        except BaseException as exc:
            await self._unwind(undo, op)
            message = exc.message if isinstance(exc, BangerError) else str(exc)
            await asyncio.to_thread(
                self.store.update_vm,
                vm.id,
                state=VMState.FAILED,
                pid=None,
                pid_start_time=None,
                last_error=message.splitlines()[0] if message else None,
            )
            raise
        undo.discard()

    async def stop(self, ref: str, timeout: float = GUEST_POWEROFF_WAIT) -> Operation:
        async def work(vm: VMRecord, op: OpHandle) -> None:
            await self._end_transfers(vm, op, "stopping")
            await self._stop(vm, op, timeout=timeout, force=False)

        return await self._vm_op("vm.stop", ref, work)

    async def restart(self, ref: str) -> Operation:
        async def work(vm: VMRecord, op: OpHandle) -> None:
            await self._end_transfers(vm, op, "restarting")
            await self._stop(vm, op, timeout=GUEST_POWEROFF_WAIT, force=False)
            await self._start(await asyncio.to_thread(self.store.get_vm, vm.id), op)

        return await self._vm_op("vm.restart", ref, work)

    def vmm_process(self, vm: VMRecord) -> VMMProcess | None:
        data = vm.config.vmm_process
        if data is None or vm.pid is None or vm.pid_start_time is None:
            return None
        return VMMProcess.from_json(data)

    def alive(self, vm: VMRecord) -> bool:
        return (
            vm.pid is not None
            and vm.pid_start_time is not None
            and is_same_process(vm.pid, vm.pid_start_time)
        )

    async def _stop(self, vm: VMRecord, op: OpHandle, *, timeout: float, force: bool) -> None:
        await op.stage("stop")
        proc = self.vmm_process(vm)
        driver = self.pipeline.driver_for(vm)
        if proc is not None and self.alive(vm):
            if vm.state == VMState.PAUSED:
                await driver.resume(proc)  # a paused guest can neither power off nor answer SSH
            await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.STOPPING)
            if not force:
                # The agent first (no network, no login); SSH when it does not answer.
                asked = await agent_use.poweroff(
                    self.pipeline.agent_endpoint(vm), vm.config, vm.init_mode
                )
                if asked is not None:
                    await op.event("info", f"asked the guest to power off via its agent ({asked})")
                elif vm.ip is not None:
                    await op.event("info", f"asking the guest to power off ({vm.init_mode} init)")
                    await self.pipeline.guest_poweroff(vm)
                if (asked is not None or vm.ip is not None) and await driver.wait(proc, timeout):
                    await op.event("info", "the guest powered off")
            result = await driver.stop(proc, graceful_timeout=0 if force else 5.0)
            if result.method != "already-exited":
                await op.event("info", f"VMM ended: {result.method} after {result.seconds:.1f}s")
        await self.pipeline.conns.drop(vm.id)  # the guest is gone: so is its held connection
        await op.stage("release_tap")
        tap = vm.tap or tap_name(vm.id)
        try:
            await self.pipeline.hostnet.delete_tap(tap)
        except BangerError as exc:
            if not force:
                raise
            await op.event("warning", f"tap {tap} not deleted: {exc.message}")
        await asyncio.to_thread(
            self.store.update_vm,
            vm.id,
            state=VMState.STOPPED,
            pid=None,
            pid_start_time=None,
            tap=None,
        )

    async def delete(self, ref: str, force: bool = False) -> Operation:
        async def work(vm: VMRecord, op: OpHandle) -> None:
            await self._delete(vm, op, force=force)

        return await self._vm_op("vm.rm", ref, work)

    async def _end_transfers(self, vm: VMRecord, op: OpHandle, why: str) -> None:
        """Cancel the VM's workspace transfers (they cannot outlive its guest)."""
        cancelled = await self.transfers.cancel(vm.id, f"VM {vm.name} is {why}")
        if cancelled:
            plural = "s" if cancelled > 1 else ""
            await op.event("notice", f"cancelled {cancelled} workspace transfer{plural}")

    async def _delete(self, vm: VMRecord, op: OpHandle, *, force: bool) -> None:
        if vm.state == VMState.CREATING and not force:
            raise Conflict(f"VM {vm.name} is still being created", hint="wait, or use --force")
        if self.transfers.running(vm.id) and not force:
            raise Conflict(
                f"VM {vm.name} has a workspace transfer running",
                hint="wait for it, or `banger vm rm --force` cancels it",
            )
        await self._end_transfers(vm, op, "being removed")
        await self._stop(vm, op, timeout=GUEST_POWEROFF_WAIT, force=force)
        await op.stage("delete")
        await asyncio.to_thread(self._delete_files, vm)
        released = await asyncio.to_thread(self.store.release_ip, vm.id)
        names = [vm.name] + ([str(released)] if released else [])
        await asyncio.to_thread(sshkeys.unpin, self.paths.known_hosts, names)
        await asyncio.to_thread(self.store.delete_vm, vm.id)
        self.locks.forget(vm.id)
        self.transfers.forget(vm.id)
        await op.event("info", f"VM {vm.name} deleted")

    def _delete_files(self, vm: VMRecord) -> None:
        if vm.root_strategy:
            root = self.pipeline.root_disk_of(vm)
            self.pipeline.strategy(vm.root_strategy).remove(
                RootDisk(root.path, root.format, vm.root_strategy)
            )
        discard_tree(self.paths.vm_dir(vm.id))
        self.paths.vm_qmp_socket(vm.id).unlink(missing_ok=True)
        self.paths.vm_agent_socket(vm.id).unlink(missing_ok=True)

    # -- daemon start ------------------------------------------------------------------
    async def reattach(self) -> None:
        """Re-adopt VMs still running from a previous daemon; mark dead ones stopped."""
        for vm in await asyncio.to_thread(self.store.list_vms):
            if vm.state in (VMState.STOPPED, VMState.FAILED):
                continue
            if self.alive(vm):
                if vm.state not in (VMState.RUNNING, VMState.PAUSED):
                    await asyncio.to_thread(self.store.update_vm, vm.id, state=VMState.RUNNING)
                log.info("re-attached VM %s (pid %s)", vm.name, vm.pid)
                continue
            state = VMState.FAILED if vm.state == VMState.CREATING else VMState.STOPPED
            note = (
                "interrupted: bangerd stopped while it was being created"
                if state == VMState.FAILED
                else vm.last_error
            )
            await asyncio.to_thread(
                self.store.update_vm,
                vm.id,
                state=state,
                pid=None,
                pid_start_time=None,
                tap=None,
                last_error=note,
            )
            log.info("VM %s is no longer running: marked %s", vm.name, state.value)
            if vm.tap:
                try:
                    await self.pipeline.hostnet.delete_tap(vm.tap)
                except BangerError as exc:
                    log.warning("could not delete tap %s of VM %s: %s", vm.tap, vm.name, exc)


def _name_or_none(get: Callable[[], str]) -> str | None:
    try:
        return get()
    except NotFound:
        return None


__all__ = ["ImageRecord", "VMService"]
