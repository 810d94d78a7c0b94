"""The test-only stage-delay hook: parsed once, inert unless set, only ever delays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger.daemon import stage_delay
from banger.daemon.ops import Operations
from banger.store import Store
from tests.support import async_wait_for


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    stage_delay.configure_from_env({})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("network:2", stage_delay.StageDelay("network", 2.0)),
        (" wait_ssh:0.5 ", stage_delay.StageDelay("wait_ssh", 0.5)),
        ("network", None),
        ("network:", None),
        ("network:0", None),
        ("network:-1", None),
        ("network:99999", None),
        ("Network:1", None),
        ("net;rm -rf /:1", None),
    ],
)
def test_parse(raw: str, expected: stage_delay.StageDelay | None) -> None:
    assert stage_delay.parse(raw) == expected


def test_unset_is_inert_and_read_only_once() -> None:
    assert stage_delay.configure_from_env({}) is None
    assert stage_delay.active() is None
    configured = stage_delay.configure_from_env({stage_delay.ENV: "launch:1"})
    assert configured == stage_delay.StageDelay("launch", 1.0)
    # Later environment changes do nothing until the next configure (= next daemon start).
    assert stage_delay.active() == configured


async def test_an_operation_pauses_before_the_named_stage_only(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_delay.configure_from_env({stage_delay.ENV: "slow:0.4"})
    paused: list[tuple[str, float]] = []  # (stage being entered, seconds) of every pause
    entering = ""

    async def spy(seconds: float) -> None:
        paused.append((entering, seconds))
        await asyncio.sleep(seconds)

    monkeypatch.setattr(stage_delay, "asyncio", SimpleNamespace(sleep=spy))
    with Store.open(short_tmp / "banger.db") as store:
        ops = Operations(store)
        async with ops.run("test.op", "x") as op:
            entering = "fast"
            await op.stage("fast")
            entering = "slow"
            began = time.monotonic()
            await op.stage("slow")
            held = time.monotonic() - began
        # "Only the named stage" is observable, not timed: one pause, before "slow".
        assert paused == [("slow", 0.4)]
        # The delay is the behaviour, so a lower bound only: the stage really waited.
        assert held >= 0.4
        record = await ops.get(op.id)
        assert record.stage == "slow"


async def test_the_recorded_stage_is_the_paused_one(short_tmp: Path) -> None:
    """A kill during the pause leaves the operation's stage = the paused stage."""
    stage_delay.configure_from_env({stage_delay.ENV: "root_disk:30"})
    with Store.open(short_tmp / "banger.db") as store:
        ops = Operations(store)

        async def body(op: object) -> None:
            from banger.daemon.ops import OpHandle

            assert isinstance(op, OpHandle)
            await op.stage("resolve")
            await op.stage("root_disk")

        started = await ops.start("vm.create", "x", body)

        async def at_root_disk() -> bool:
            return (await ops.get(started.id)).stage == "root_disk"

        await async_wait_for(at_root_disk, 60, "the op at stage root_disk")
        await ops.cancel_all()
