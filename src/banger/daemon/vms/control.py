"""Pause and resume a running VM (``banger vm pause|resume``), on either driver.

Pausing stops the guest's vCPUs (QMP ``stop`` for QEMU, ``PATCH /vm Paused``
for Firecracker); the VMM process, its memory, the tap and the lease stay, so
resume continues exactly where the guest was. While paused the guest answers
nothing (no SSH, no ping); the store says ``paused`` (schema v3), and a
daemon restart keeps it paused. Stopping a paused VM resumes it first so that
the guest can power off.

Snapshots (``vm snapshot``, ``vm create --from-snapshot``) build on pause:
see :mod:`.snapshots` and :mod:`.snapshot_restore`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.vms import agent_use
from banger.daemon.vms.service import VMService
from banger.errors import Conflict
from banger.store import VMRecord, VMState
from banger.vmm.base import VMMProcess


class VMControl:
    def __init__(self, vms: VMService) -> None:
        self.vms = vms

    async def _op(
        self, kind: str, ref: str, work: Callable[[VMRecord, OpHandle], Awaitable[None]]
    ) -> Operation:
        vms = self.vms
        vm = await asyncio.to_thread(vms.store.resolve_vm, ref)

        async def body(op: OpHandle) -> None:
            async with vms.locks.hold(vm.id):
                await work(await asyncio.to_thread(vms.store.get_vm, vm.id), op)

        return await vms.ops.start(kind, vm.name, body)

    async def pause(self, ref: str) -> Operation:
        async def work(vm: VMRecord, op: OpHandle) -> None:
            await op.stage("pause")
            if vm.state == VMState.PAUSED:
                raise Conflict(
                    f"VM {vm.name} is already paused", hint=f"banger vm resume {vm.name}"
                )
            proc = self._running(vm)
            # A paused guest answers nothing: its held connection would only time out.
            await self.vms.pipeline.conns.drop(vm.id)
            await self.vms.pipeline.driver_for(vm).pause(proc)
            await asyncio.to_thread(self.vms.store.update_vm, vm.id, state=VMState.PAUSED)
            await op.event("info", f"VM {vm.name} paused ({vm.vmm}): vCPUs stopped, memory kept")

        return await self._op("vm.pause", ref, work)

    async def resume(self, ref: str) -> Operation:
        async def work(vm: VMRecord, op: OpHandle) -> None:
            await op.stage("resume")
            if vm.state != VMState.PAUSED:
                raise Conflict(f"VM {vm.name} is {vm.state.value}, not paused")
            proc = self._running(vm)
            await self.vms.pipeline.driver_for(vm).resume(proc)
            await asyncio.to_thread(self.vms.store.update_vm, vm.id, state=VMState.RUNNING)
            await op.event("info", f"VM {vm.name} resumed")
            # Its clock stood still while paused: the agent sets it.
            await agent_use.resync_clock(
                self.vms.pipeline.agent_endpoint(vm), vm.config, op, "the resume"
            )

        return await self._op("vm.resume", ref, work)

    def _running(self, vm: VMRecord) -> VMMProcess:
        proc = self.vms.vmm_process(vm)
        live = proc is not None and self.vms.alive(vm)
        if proc is None or not live or vm.state not in (VMState.RUNNING, VMState.PAUSED):
            raise Conflict(
                f"VM {vm.name} is {vm.state.value}; only a running VM can be paused or resumed",
                hint=f"banger vm start {vm.name}",
            )
        return proc
