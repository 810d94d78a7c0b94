"""Taps bangerd asked the helper about and never heard back on: deleted once a helper answers.

A helper killed inside ``open_tap`` may already have made the tap; the failed
create's undo then asks the dead helper to delete it, and fails too. Nothing
looked again before the next bangerd start, so the tap outlived helper
restarts and new creates. :class:`~banger.daemon.hostnet.HostNetwork` records
the name here when an ``open_tap`` it sent got no answer, or a ``delete_tap``
got none (or never reached a helper), and :meth:`OwedTaps.settle` asks for
the delete again: after every bridge ensure (each create and start: the
helper just answered) and every :data:`SETTLE_INTERVAL` seconds while any is
owed, so a restarted helper clears them within seconds.

Never a tap in use: tap names are per VM (``bt-<id>``), a VM's operations hold
its lock, and :meth:`OwedTaps.claim` takes a name out (under the lock every
retry holds) before ``open_tap`` asks for it again. The set lives in memory:
after a bangerd restart, reconciliation deletes every tap no running VM owns.
"""

from __future__ import annotations

import asyncio
import logging

from banger.errors import HelperError
from banger.helper.client import HelperClient, HelperUnreachable

log = logging.getLogger(__name__)

#: Seconds between retries while a tap is owed (one failed connect when the helper is still down).
SETTLE_INTERVAL = 2.0


class OwedTaps:
    def __init__(self, helper: HelperClient) -> None:
        self.helper = helper
        self._names: set[str] = set()
        self._lock = asyncio.Lock()

    @property
    def names(self) -> list[str]:
        return sorted(self._names)

    def owe(self, name: str) -> None:
        """``name`` may exist on the host and nothing else will delete it."""
        if name not in self._names:
            log.warning("tap %s: no answer from the helper; deleted once one answers", name)
        self._names.add(name)

    def paid(self, name: str) -> None:
        self._names.discard(name)

    async def claim(self, name: str) -> None:
        """``name`` is about to be asked for again: from now on no retry may delete it."""
        async with self._lock:
            self._names.discard(name)

    async def settle(self) -> None:
        """Ask for every owed delete; stops at the first that finds no helper. Never raises."""
        if not self._names:
            return
        async with self._lock:
            for name in sorted(self._names):
                try:
                    result = await self.helper.acall("delete_tap", name=name)
                except HelperUnreachable:
                    return  # still no helper: the next settle tries again
                except HelperError as exc:
                    # The helper answered and refused: asking again cannot help. The
                    # tap stays visible to `banger doctor` ("stray taps").
                    self._names.discard(name)
                    log.warning("tap %s: owed delete refused: %s", name, exc.message)
                    continue
                self._names.discard(name)
                gone = "deleted" if result.get("deleted") else "already gone"
                log.info("tap %s: %s (its helper had not answered)", name, gone)

    async def settle_periodically(self, interval: float = SETTLE_INTERVAL) -> None:
        """Run for the daemon's life: a restarted helper is noticed without waiting for a create."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.settle()
            except Exception:  # a bug here must not end the loop for the daemon's life
                log.exception("retrying owed tap deletes failed")
