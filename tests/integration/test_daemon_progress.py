"""A workspace copy's progress events (daemon/progress.py FileProgress) over a real store.

The throttle interval is set to 0 or to "never" per test, so no assertion depends on
how fast this machine runs the calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.daemon import progress as progress_mod
from banger.daemon.ops import Operations
from banger.daemon.progress import FileProgress
from banger.store import Store
from banger.workspace.tarstream import Progress


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "banger.db") as s:
        yield s


def counts(done: int, total: int = 10) -> Progress:
    return Progress(files_done=done, files_total=total, bytes_done=done << 20,
                    bytes_total=total << 20)  # fmt: skip


async def progress_events(ops: Operations, op_id: str) -> list[tuple[str, dict[str, object]]]:
    return [(e.message, e.data) async for e in ops.follow(op_id) if e.kind == "progress"]


async def test_calls_from_a_worker_thread_become_events_and_the_last_is_left_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_mod, "FILES_INTERVAL", 0.0)
    ops = Operations(store)
    async with ops.run("workspace.prepare", "vm1") as op:
        progress = FileProgress(op, asyncio.get_running_loop())

        def writer() -> None:  # as write_workspace calls it: from its own thread
            assert threading.current_thread() is not threading.main_thread()
            for done in (3, 7, 10):
                progress(counts(done))

        await asyncio.to_thread(writer)
        await asyncio.sleep(0)  # let the loop run the callbacks the thread scheduled
        await progress.flush()
    events = await progress_events(ops, op.id)
    assert [m for m, _ in events] == ["3/10 files, 3.0/10.0 MiB", "7/10 files, 7.0/10.0 MiB"]
    assert events[0][1] == {"files_done": 3, "files_total": 10, "bytes_done": 3 << 20,
                            "bytes_total": 10 << 20}  # fmt: skip


async def test_calls_inside_the_interval_are_dropped(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_mod, "FILES_INTERVAL", float("inf"))
    ops = Operations(store)
    async with ops.run("workspace.prepare", "vm1") as op:
        progress = FileProgress(op, asyncio.get_running_loop())
        for done in range(1, 10):  # on the loop, as the SSH copy calls it
            progress(counts(done))
        await asyncio.sleep(0)
        await progress.flush()
    assert await progress_events(ops, op.id) == []
