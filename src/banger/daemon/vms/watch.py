"""Notice a VMM that dies while bangerd runs (killed, crashed, guest powered off).

One task waits on a pidfd per running VM (:func:`banger.procinfo.wait_for_exit`:
readable the moment the process exits, no polling of the process). The set
of running VMs is re-read from the store every :data:`RESCAN` seconds and a
VM is re-checked then too, so a VMM that dies right after its start is
noticed within that bound at worst. When one is gone the VM's lock is taken
(whatever operation holds it finishes first), and if the record still names
that exact process (pid + start time) the VM is marked stopped with the
reason in ``last_error`` and its tap is deleted. A ``vm stop`` or
``vm rm`` that ended the process on purpose has cleared the pid by then, so
it is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable

from banger.daemon.vms.service import VMService
from banger.daemon.vms.stopped import delete_tap_or_warn, mark_stopped
from banger.errors import NotFound
from banger.procinfo import reap, wait_for_exit
from banger.store import VMRecord, VMState

log = logging.getLogger(__name__)

#: Seconds between re-reads of the running VMs (new VMs get a pidfd wait then).
RESCAN = 3.0
WATCHED = (VMState.RUNNING, VMState.PAUSED)

Key = tuple[str, int, int]  # vm id, pid, start time


def exit_reason(pid: int, status: int | None) -> str:
    """One line for ``last_error``; the wait status is known only for our own children."""
    head = f"the VMM (pid {pid}) exited while the VM was running"
    if status is None:
        return head
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"{head}: killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return f"{head}: exit status {code}" + (" (the guest powered off)" if code == 0 else "")


class VMMWatch:
    def __init__(self, vms: VMService, rescan: float = RESCAN) -> None:
        self.vms = vms
        self.rescan = rescan
        self._waits: dict[Key, asyncio.Task[bool]] = {}
        self._task: asyncio.Task[None] | None = None
        #: VMs marked stopped so far (tests and the log read it).
        self.noticed: list[str] = []
        #: Called with each VM marked stopped (a pool replaces a ready guest that died).
        self.on_stopped: list[Callable[[VMRecord], None]] = []

    @classmethod
    def start(cls, vms: VMService, rescan: float = RESCAN) -> VMMWatch:
        watch = cls(vms, rescan)
        watch._task = asyncio.create_task(watch._run(), name="vmm-watch")
        return watch

    async def close(self) -> None:
        tasks = [*self._waits.values(), *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._waits.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self._refresh()
            except Exception:  # the watch must outlive one bad read
                log.exception("VMM watch: could not read the running VMs")
            if self._waits:
                await asyncio.wait(
                    self._waits.values(), timeout=self.rescan, return_when=asyncio.FIRST_COMPLETED
                )
            else:
                await asyncio.sleep(self.rescan)
            for key, task in list(self._waits.items()):
                if task.done():
                    del self._waits[key]
                    if not task.cancelled() and task.exception() is None and task.result():
                        await self._gone(key)

    async def _refresh(self) -> None:
        records = await asyncio.to_thread(self.vms.store.list_vms)
        current = {
            (vm.id, vm.pid, vm.pid_start_time)
            for vm in records
            if vm.state in WATCHED and vm.pid is not None and vm.pid_start_time is not None
        }
        for key in list(self._waits):
            if key not in current:
                self._waits.pop(key).cancel()
        for key in current:
            if key not in self._waits:
                _vm_id, pid, start = key
                self._waits[key] = asyncio.create_task(wait_for_exit(pid, None, start))

    async def _gone(self, key: Key) -> None:
        vm_id, pid, start = key
        vms = self.vms
        async with vms.locks.hold(vm_id):
            try:
                vm = await asyncio.to_thread(vms.store.get_vm, vm_id)
            except NotFound:
                return
            if (vm.pid, vm.pid_start_time) != (pid, start) or vm.state not in WATCHED:
                return  # stopped or restarted on purpose meanwhile
            if vms.alive(vm):
                return
            reason = exit_reason(pid, reap(pid))
            await mark_stopped(vms, vm, reason)
            log.warning("VM %s: %s; marked stopped", vm.name, reason)
            self.noticed.append(vm.name)
            await delete_tap_or_warn(vms, vm, log, "next start retries")
        for listener in self.on_stopped:
            try:
                listener(vm)
            except Exception:  # one listener's bug must not stop the watch
                log.exception("VMM watch: a listener failed for VM %s", vm.name)
