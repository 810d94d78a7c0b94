"""Operations older than ``daemon.ops_retention_days`` are pruned, at start and hourly.

Only finished operations go (the store never deletes a running one); their
events go with them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Protocol

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0


class PrunableStore(Protocol):
    def prune_operations(self, older_than: datetime) -> int: ...


def prune_old_operations(store: PrunableStore, days: int, now: datetime | None = None) -> int:
    """Delete operations that finished more than ``days`` days before ``now``."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    removed = store.prune_operations(cutoff)
    if removed:
        log.info("pruned %d operation(s) finished before %s", removed, cutoff.isoformat())
    return removed


async def prune_periodically(
    store: PrunableStore, days: int, interval: float = PRUNE_INTERVAL
) -> None:
    """Prune now, then every ``interval`` seconds until cancelled; errors are logged."""
    while True:
        try:
            await asyncio.to_thread(prune_old_operations, store, days)
        except Exception:
            log.exception("pruning old operations failed")
        await asyncio.sleep(interval)
