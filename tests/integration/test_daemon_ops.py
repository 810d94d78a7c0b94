"""The Operations service in-process over a real SQLite store (the API later services use)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.api_models import OpEvent
from banger.daemon.ops import Operations, OpHandle
from banger.errors import CommandError, DaemonUnavailable, HelperError
from banger.store import OpState, Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "banger.db") as s:
        yield s


async def collect(ops: Operations, op_id: str) -> list[OpEvent]:
    return [event async for event in ops.follow(op_id)]


async def test_run_records_stages_events_and_success(store: Store) -> None:
    ops = Operations(store)
    async with ops.run("vm.start", "vm1") as op:
        await op.stage("prepare_work_disk")
        await op.event("warning", "skipped ~/.netrc: missing", {"path": "~/.netrc"})
        await op.stage("launch")
    record = store.get_operation(op.id)
    assert record.state == OpState.SUCCEEDED
    assert record.stage == "launch"
    events = await collect(ops, op.id)
    assert [(e.kind, e.stage) for e in events] == [
        ("started", None),
        ("stage", "prepare_work_disk"),
        ("warning", "prepare_work_disk"),
        ("stage", "launch"),
        ("succeeded", "launch"),
    ]
    assert events[2].data == {"path": "~/.netrc"}


async def test_banger_error_fails_the_op_at_its_stage_with_hint(store: Store) -> None:
    ops = Operations(store)
    with pytest.raises(HelperError):
        async with ops.run("vm.start", "vm1") as op:
            await op.stage("network")
            raise HelperError("tap creation refused", hint="is banger-helper running?")
    record = store.get_operation(op.id)
    assert (record.state, record.stage) == (OpState.FAILED, "network")
    assert record.error == "tap creation refused"
    assert record.hint == "is banger-helper running?"
    last = store.events_since(op.id)[-1]
    assert (last.kind, last.data["exit_code"]) == ("failed", 6)


async def test_unexpected_exception_is_recorded_as_internal_error(store: Store) -> None:
    ops = Operations(store)
    with pytest.raises(ZeroDivisionError):
        async with ops.run("vm.start", "vm1") as op:
            await op.stage("boot")
            _ = 1 / 0
    record = store.get_operation(op.id)
    assert record.state == OpState.FAILED
    assert record.error == "internal error: ZeroDivisionError: division by zero"


async def test_follow_wakes_on_each_event_without_polling(store: Store) -> None:
    ops = Operations(store)
    step = asyncio.Event()
    seen: list[str] = []

    async def body(op: OpHandle) -> None:
        await op.stage("one")
        await step.wait()
        await op.stage("two")

    record = await ops.start("demo", "x", body)

    async def follower() -> None:
        async for event in ops.follow(record.id):
            seen.append(event.kind + ":" + str(event.stage))
            if event.stage == "one" and event.kind == "stage":
                step.set()  # the body only proceeds once we have heard stage one

    await asyncio.wait_for(follower(), 5)
    assert seen == ["started:None", "stage:one", "stage:two", "succeeded:two"]


async def test_background_failure_is_recorded_not_raised(store: Store) -> None:
    ops = Operations(store)

    async def body(op: OpHandle) -> None:
        await op.stage("convert")
        raise CommandError(["qemu-img", "convert"], returncode=1, stderr="no space left")

    record = await ops.start("image.pull", "debian", body)
    events = await asyncio.wait_for(collect(ops, record.id), 5)
    assert events[-1].kind == "failed"
    final = await ops.get(record.id)
    assert final.stage == "convert"
    assert final.error == "qemu-img failed with exit status 1: no space left"


async def test_drain_cancels_after_grace_and_refuses_new_ops(store: Store) -> None:
    ops = Operations(store)

    async def forever(op: OpHandle) -> None:
        await op.stage("wait")
        await asyncio.Event().wait()

    record = await ops.start("demo", "x", forever)
    follower = asyncio.create_task(collect(ops, record.id))
    await ops.drain(0.1)
    events = await asyncio.wait_for(follower, 60)  # a hang bound: the stream ends with the op
    assert events[-1].kind == "failed"
    assert events[-1].data["cancelled"] is True
    final = await ops.get(record.id)
    assert final.error is not None and final.error.startswith("cancelled")
    with pytest.raises(DaemonUnavailable):
        async with ops.run("demo", "y"):
            pass


def test_interrupted_ops_from_a_previous_daemon_are_failed(store: Store) -> None:
    leftover = store.create_operation("vm.start", "vm1")
    store.update_operation(leftover.id, state=OpState.RUNNING, stage="boot")
    assert Operations(store).fail_interrupted() == 1
    record = store.get_operation(leftover.id)
    assert record.state == OpState.FAILED
    assert record.stage == "boot"
    assert Operations(store).fail_interrupted() == 0
