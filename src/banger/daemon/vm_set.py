"""``vm set``: change a VM's CPUs and memory (recorded, used at its next start)
and grow its work disk (offline ``resize2fs``; never shrinks, never while running).

Bounds are the host's: CPUs up to its core count, memory up to its RAM.
The change runs as a ``vm.set`` operation under the VM's lock, so it cannot
race a start; applying it to a running VM is a restart (the CLI's ``--restart``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.vms.names import FieldProblems, check_memory, check_vcpus
from banger.daemon.vms.service import VMService
from banger.disk.workdisk import grow_work_disk
from banger.errors import Conflict, InvalidArgument
from banger.store import VMRecord

MIB = 1024 * 1024


@dataclass(frozen=True)
class VMSettingsChange:
    vcpus: int | None = None
    memory_mib: int | None = None
    work_disk_size: int | None = None  # bytes


def _check_disk(vm: VMRecord, size: int, running: bool) -> None:
    if size <= 0 or size % MIB:
        raise InvalidArgument(
            f"disk: must be a positive whole number of MiB, got {size} bytes", hint="e.g. --disk 8G"
        )
    if size < vm.work_disk_size:
        raise InvalidArgument(
            f"disk: {vm.name}'s work disk is {vm.work_disk_size // MIB} MiB; "
            f"shrinking it to {size // MIB} MiB is refused",
            hint="work disks only grow",
        )
    if size > vm.work_disk_size and running:
        raise Conflict(
            f"VM {vm.name} is running; its work disk can only grow while it is stopped",
            hint=f"banger vm stop {vm.name}, then run this again",
        )


async def set_vm(vms: VMService, ref: str, change: VMSettingsChange) -> Operation:
    """Check the change at once (a bad request creates no operation), then apply it."""
    if change == VMSettingsChange():
        raise InvalidArgument("nothing to change", hint="give --cpus, --memory or --disk")
    vm = await asyncio.to_thread(vms.store.resolve_vm, ref)
    fields = FieldProblems()  # every bad field is named, not just the first
    if change.vcpus is not None:
        fields.check(check_vcpus, change.vcpus)
    if change.memory_mib is not None:
        fields.check(check_memory, change.memory_mib)
    if change.work_disk_size is not None:
        fields.check(_check_disk, vm, change.work_disk_size, vms.alive(vm))
    fields.raise_any()

    async def body(op: OpHandle) -> None:
        async with vms.locks.hold(vm.id):
            current = await asyncio.to_thread(vms.store.get_vm, vm.id)
            size = change.work_disk_size
            if size is not None and size != current.work_disk_size:
                _check_disk(current, size, vms.alive(current))
                await op.stage("grow_work_disk")
                disk = vms.paths.vm_work_disk(current.id)
                await asyncio.to_thread(grow_work_disk, disk, size)
                await asyncio.to_thread(vms.store.update_vm, current.id, work_disk_size=size)
                await op.event("info", f"work disk grown to {size // MIB} MiB")
            await op.stage("record")
            if change.vcpus is not None:
                await asyncio.to_thread(vms.store.update_vm, current.id, vcpus=change.vcpus)
            if change.memory_mib is not None:
                await asyncio.to_thread(
                    vms.store.update_vm, current.id, memory_mib=change.memory_mib
                )
            if vms.alive(current) and (change.vcpus or change.memory_mib):
                await op.event("info", "CPUs and memory apply at the next start (or --restart)")

    return await vms.ops.start("vm.set", vm.name, body)
