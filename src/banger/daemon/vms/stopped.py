"""Recording a VM as stopped outside a ``vm stop``: what shutdown and the watcher share.

When bangerd stops its VMs on exit (:mod:`.shutdown`) and when it notices a
VMM that died (:mod:`.watch`), the VM ends the same way: its tap is deleted
on a best-effort basis (a leftover tap is removed by the next start) and its
record forgets the process and the tap.
"""

from __future__ import annotations

import asyncio
import logging

from banger.daemon.vms.service import VMService
from banger.errors import BangerError
from banger.net.taps import tap_name
from banger.store import VMRecord, VMState


async def delete_tap_or_warn(vms: VMService, vm: VMRecord, log: logging.Logger, retry: str) -> None:
    """Delete ``vm``'s tap; a failure is logged on ``log`` (``retry``: what happens then)."""
    tap = vm.tap or tap_name(vm.id)
    try:
        await vms.pipeline.hostnet.delete_tap(tap)
    except (BangerError, OSError) as exc:
        log.warning("VM %s: tap %s not deleted (%s): %s", vm.name, tap, retry, exc)


async def mark_stopped(vms: VMService, vm: VMRecord, last_error: str | None) -> None:
    """Record ``vm`` as stopped, with no process or tap, and why (None: on purpose)."""
    await asyncio.to_thread(
        vms.store.update_vm,
        vm.id,
        state=VMState.STOPPED,
        pid=None,
        pid_start_time=None,
        tap=None,
        last_error=last_error,
    )
