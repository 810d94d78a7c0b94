"""Operations pruning over a real store with a controllable clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from banger.daemon.ops_retention import prune_old_operations, prune_periodically
from banger.errors import NotFound
from banger.store import OpState, Store
from tests.support import async_wait_for


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def test_only_old_finished_operations_go(tmp_path: Path) -> None:
    clock = Clock()
    store = Store.open(tmp_path / "banger.db", clock=clock)
    try:
        old_done = store.create_operation("vm.start", "a")
        store.update_operation(old_done.id, state=OpState.SUCCEEDED)
        old_failed = store.create_operation("vm.create", "b")
        store.update_operation(old_failed.id, state=OpState.FAILED, error="boom")
        old_running = store.create_operation("vm.create", "c")  # never finished
        clock.now += timedelta(days=6)
        recent = store.create_operation("vm.stop", "a")
        store.update_operation(recent.id, state=OpState.SUCCEEDED)

        now = datetime(2024, 1, 8, 1, tzinfo=UTC)  # 7 days + 1 hour after the old ones
        assert prune_old_operations(store, 7, now=now) == 2
        for gone in (old_done, old_failed):
            with pytest.raises(NotFound):
                store.get_operation(gone.id)
        assert store.get_operation(old_running.id).state == OpState.PENDING
        assert store.get_operation(recent.id).state == OpState.SUCCEEDED
        assert prune_old_operations(store, 7, now=now) == 0
    finally:
        store.close()


async def test_periodic_pruning_runs_at_once_and_stops_on_cancel(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "banger.db", clock=lambda: datetime(2020, 1, 1, tzinfo=UTC))
    try:
        op = store.create_operation("vm.start", "a")
        store.update_operation(op.id, state=OpState.SUCCEEDED)
        task = asyncio.create_task(prune_periodically(store, 1, interval=3600))

        async def pruned() -> bool:
            return not store.list_operations(include_finished=True)

        await async_wait_for(pruned, 60, "the old operation pruned by the periodic task")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        store.close()
