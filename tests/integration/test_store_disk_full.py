"""A full filesystem under banger's database: a clear error, nothing half-written, and
operations that keep going when only a progress line could not be recorded.

Real SQLite on a real, tiny tmpfs (root mounts it in a private directory), filled by
the store itself; no fake errors.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.daemon.ops import Operations, OpHandle
from banger.errors import BangerError
from banger.store import OpState, Store
from banger.store.errors import DatabaseFull
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    # 1 MiB: room for the empty database of the current schema (it grows with each
    # migration; at 512 KiB schema v6 left only ten events) and a few dozen events.
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "none", str(mnt)],
                   check=True)  # fmt: skip
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(store: Store, op_id: str) -> int:
    """Append events until the database cannot grow; how many made it."""
    blob = "x" * 4000
    for count in range(10_000):
        try:
            store.append_event(op_id, "info", None, blob, {})
        except DatabaseFull:
            return count
    raise AssertionError("1 MiB never filled up")


def fill_with_a_file(filler: Path) -> None:
    """Fill the rest of ``filler``'s filesystem with one plain file, to the last block."""
    with open(filler, "wb") as f, pytest.raises(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())


def test_a_full_disk_is_one_clear_error_and_the_store_lives_on(tiny: Path) -> None:
    reserve = tiny / "reserve"
    reserve.write_bytes(b"r" * 131072)  # another file on the filesystem, to free later
    with Store.open(tiny / "banger.db") as store:
        op = store.create_operation("test.fill", "x")
        written = fill(store, op.id)
        assert written > 10
        with pytest.raises(DatabaseFull) as info:
            store.append_event(op.id, "info", None, "x" * 4000, {})
        assert info.value.message == (
            f"no space left on device for banger's database {tiny}/banger.db"
        )
        assert info.value.hint and "BANGER_HOME" in info.value.hint
        # Nothing half-written, and reads still work.
        assert len(store.events_since(op.id)) == written
        # Space back (the other file goes): writes work again on the same connection.
        reserve.unlink()
        store.update_operation(op.id, state=OpState.FAILED, error="disk full")
    with Store.open(tiny / "banger.db") as again:
        assert again.get_operation(op.id).state == OpState.FAILED
        assert len(again.events_since(op.id)) == written


async def test_an_operation_survives_a_progress_line_that_could_not_be_recorded(
    tiny: Path,
) -> None:
    filler = tiny / "filler"
    with Store.open(tiny / "banger.db") as store:
        ops = Operations(store)
        async with ops.run("test.op", "x") as op:
            await op.stage("work")
            fill_with_a_file(filler)  # as a build would
            await op.event("info", "x" * 200_000)  # cannot be stored: logged, not fatal
            filler.unlink()  # the failing step cleans up after itself
        record = store.get_operation(op.id)
        assert record.state == OpState.SUCCEEDED


async def test_followers_are_let_go_when_the_end_of_an_operation_cannot_be_recorded(
    tiny: Path,
) -> None:
    filler = tiny / "filler"

    async def body(op: OpHandle) -> None:
        await op.stage("work")
        fill_with_a_file(filler)
        raise BangerError("e" * 100_000)  # a failure whose record cannot fit any more

    with Store.open(tiny / "banger.db") as store:
        ops = Operations(store)
        started = await ops.start("test.full", "x", body)

        async def follow() -> list[str]:
            return [event.kind async for event in ops.follow(started.id)]

        kinds = await asyncio.wait_for(follow(), timeout=30)  # it used to wait forever
        assert "stage" in kinds and "failed" not in kinds, kinds
        assert not ops.is_live(started.id)
        # The store still says running: the next daemon start marks it interrupted.
        assert store.get_operation(started.id).state == OpState.RUNNING
        filler.unlink()
        assert ops.fail_interrupted() == 1
        assert store.get_operation(started.id).state == OpState.FAILED
