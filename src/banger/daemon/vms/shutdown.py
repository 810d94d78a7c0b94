"""``daemon.stop_vms_on_shutdown = true``: stop every running VM before bangerd exits.

Each VM is stopped like ``vm stop`` does it — under its lock: resume if
paused, ask the guest to power off — through its agent, else over SSH (so
its filesystems are synced and unmounted) — wait, then the driver's own graceful stop (ACPI button,
QMP quit, SIGKILL as the last resort) — all VMs in parallel, bounded by
:data:`SHUTDOWN_BUDGET` so the unit's ``TimeoutStopSec`` (60 s) is never hit.
With the setting false (the default) the guests keep running and the next
bangerd re-attaches them (pid + start time).
"""

from __future__ import annotations

import asyncio
import logging

from banger.daemon.vms import agent_use
from banger.daemon.vms.service import VMService
from banger.daemon.vms.stopped import delete_tap_or_warn, mark_stopped
from banger.store import VMRecord, VMState

log = logging.getLogger(__name__)

#: Seconds for all VMs together; under systemd's TimeoutStopSec=60 with margin.
SHUTDOWN_BUDGET = 45.0
#: Seconds a guest gets to power off after being asked, before the driver's stop.
GUEST_WAIT = 20.0


async def stop_all(
    vms: VMService, budget: float = SHUTDOWN_BUDGET, guest_wait: float = GUEST_WAIT
) -> list[str]:
    """Stop every live VM; returns the names stopped (the rest are re-attached next start)."""
    records = await asyncio.to_thread(vms.store.list_vms)
    live = [vm for vm in records if vm.state != VMState.STOPPED and vms.alive(vm)]
    if not live:
        return []
    log.info("stopping %d VM(s) before exiting (daemon.stop_vms_on_shutdown)", len(live))
    tasks = [asyncio.create_task(_stop_one(vms, vm, guest_wait)) for vm in live]
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    stopped = []
    for vm, task in zip(live, tasks, strict=True):
        if task in done and not task.cancelled() and task.exception() is None:
            stopped.append(vm.name)
        elif task in done and not task.cancelled():
            log.warning("VM %s not stopped: %s", vm.name, task.exception())
        else:
            log.warning("VM %s not stopped within %.0fs; it keeps running", vm.name, budget)
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    return stopped


async def _stop_one(vms: VMService, vm: VMRecord, guest_wait: float) -> None:
    async with vms.locks.hold(vm.id):
        vm = await asyncio.to_thread(vms.store.get_vm, vm.id)
        proc = vms.vmm_process(vm)
        if proc is None or not vms.alive(vm):
            return
        driver = vms.pipeline.driver_for(vm)
        if vm.state == VMState.PAUSED:
            await driver.resume(proc)
        await asyncio.to_thread(vms.store.update_vm, vm.id, state=VMState.STOPPING)
        how = "the guest powered off"
        asked = await agent_use.poweroff(vms.pipeline.agent_endpoint(vm), vm.config, vm.init_mode)
        if asked is None and vm.ip is not None:
            await vms.pipeline.guest_poweroff(vm)
        if (asked is None and vm.ip is None) or not await driver.wait(proc, guest_wait):
            how = (await driver.stop(proc, graceful_timeout=5.0)).method
        await vms.pipeline.conns.drop(vm.id)
        await delete_tap_or_warn(vms, vm, log, "next start removes it")
        await mark_stopped(vms, vm, None)
        log.info("VM %s stopped for the daemon's shutdown (%s)", vm.name, how)
