"""Per-VM locks.

Ordering rules (also in docs/ARCHITECTURE.md):

1. Every operation on one VM (start, stop, restart, delete) holds that VM's
   lock for its whole duration; operations on different VMs run in parallel.
2. Never wait for a second VM's lock while holding one (no operation needs
   two VMs, so none does).
3. The artifact publication lock (images/kernels) may be taken while holding
   no VM lock only: defaults are resolved and built before a VM row exists.
4. The store's own transactions and the helper's op lock are leaves: held
   for milliseconds, never while waiting on anything else.
5. The host network lock (``HostNetwork.lock``) may be taken while holding a
   VM lock (a start's bridge ensure), never the other way round: the network
   cleanup holds it and only *reads* which VM locks are taken (:meth:`VMLocks.held`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from banger.daemon.vms.lock_order import DEBUG_LOCKS_ENV, LockOrderCheck

log = logging.getLogger(__name__)


class VMLocks:
    def __init__(self, *, check_order: bool | None = None) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        # Rule 2 checked at run time when BANGER_DEBUG_LOCKS=1 (read once, here).
        enabled = os.environ.get(DEBUG_LOCKS_ENV) == "1" if check_order is None else check_order
        self.order = LockOrderCheck() if enabled else None
        if self.order is not None:
            log.warning(
                "%s=1: every VM lock acquisition is checked against rule 2", DEBUG_LOCKS_ENV
            )

    @asynccontextmanager
    async def hold(self, vm_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(vm_id, asyncio.Lock())
        if self.order is None:
            async with lock:
                yield
            return
        with self.order.taking(vm_id):
            async with lock:
                yield

    def held(self) -> list[str]:
        """The VMs an operation is working on right now (their lock is taken)."""
        return [vm_id for vm_id, lock in self._locks.items() if lock.locked()]

    def forget(self, vm_id: str) -> None:
        """Drop a deleted VM's lock (called while holding it; waiters still get it)."""
        lock = self._locks.get(vm_id)
        if lock is not None and not lock._waiters:  # asyncio offers no public check
            self._locks.pop(vm_id, None)
