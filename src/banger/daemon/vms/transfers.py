"""Per-VM workspace locks: transfers serialise among themselves, not with the VM's life.

A ``workspace prepare``/``export`` of one VM holds that VM's *workspace* lock
(:meth:`Transfers.hold`), never its lifecycle lock (:mod:`.locks`): two
transfers into one VM run one after the other, while ``vm stop``/``vm rm``
no longer queue behind a long transfer. Instead they end it:
:meth:`Transfers.cancel` cancels every transfer of the VM (running or waiting
for the lock) and waits for them to unwind — a prepare swaps its new tree in
only after the whole stream arrived, an export writes its branch only after
the whole bundle was verified, so a cancelled transfer leaves the old state.

Ordering (docs/ARCHITECTURE.md, rule 6): a lifecycle operation may cancel and
wait for transfers while holding the VM lock; a transfer never takes a VM
lock, so that wait always ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

#: Seconds :meth:`Transfers.cancel` waits for cancelled transfers to unwind.
CANCEL_WAIT = 30.0


class Transfers:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, set[asyncio.Task[object]]] = {}

    @asynccontextmanager
    async def hold(self, vm_id: str) -> AsyncIterator[None]:
        """The VM's workspace lock, for the current task (cancellable by :meth:`cancel`)."""
        task = asyncio.current_task()
        tasks = self._tasks.setdefault(vm_id, set())
        if task is not None:
            tasks.add(task)  # before the wait: a queued transfer is cancelled too
        try:
            async with self._locks.setdefault(vm_id, asyncio.Lock()):
                yield
        finally:
            if task is not None:
                tasks.discard(task)

    def running(self, vm_id: str) -> int:
        """How many transfers of the VM run or wait."""
        return len(self._tasks.get(vm_id, ()))

    async def cancel(self, vm_id: str, reason: str) -> int:
        """Cancel the VM's transfers and wait for them to unwind; returns how many."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks.get(vm_id, ()) if t is not current and not t.done()]
        for task in tasks:
            task.cancel(reason)
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_WAIT)
        return len(tasks)

    def forget(self, vm_id: str) -> None:
        """Drop a deleted VM's entries (its transfers were cancelled first)."""
        if not self._tasks.get(vm_id):
            self._tasks.pop(vm_id, None)
            self._locks.pop(vm_id, None)
