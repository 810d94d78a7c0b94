"""Pools in the Python SDK against a real bangerd (issue #18 item 4, issue #17's SDK).

No guest boots here: ``bg.pools`` sets, lists, shows and removes size-0 pools
(no template, no guests); ``create(pool=...)`` refuses what a pool fixes before
any request; ``wait_ready`` raises the pool's own error typed when its fill
fails (this home has no root helper, so a size-1 pool's first fill fails), and
a timeout naming the pool while it is still filling (held there by bangerd's
stage-delay test hook). A real pool's guest: tests/e2e/test_sdk_e2e.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.errors import InvalidArgument, NotFound
from banger.sdk import Banger, PoolFailed, PoolTimeout, aio
from tests.integration.bangerd_harness import (
    Daemon,
    home_env,
    running_daemon,
    spawn_daemon,
    wait_ready,
)
from tests.support import short_tmpdir

#: How long the delayed daemon's pool.fill sits before its first stage (retire):
#: the pool reads "filling" that long, far beyond the short wait_ready timeout below.
FILL_DELAY = 10


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tmpdir() as home, running_daemon(home) as d:
        yield d


@pytest.fixture
def bg(daemon: Daemon) -> Iterator[Banger]:
    with Banger(daemon.paths) as banger:
        yield banger


def _op_ids(bg: Banger) -> set[str]:
    return {op.id for op in bg.client.list_ops(include_finished=True)}


def test_set_list_get_wait_ready_remove_of_an_empty_pool(bg: Banger) -> None:
    assert bg.pools.list() == []
    made = bg.pools.set("p0", size=0, cpus=1, memory="1G", init="fast")
    assert (made.name, made.size, made.vcpus, made.memory_mib, made.init) == (
        "p0", 0, 1, 1024, "fast",
    )  # fmt: skip
    assert (made.state, made.ready, made.template, made.error) == ("empty", [], None, None)

    # None keeps the pool's value; memory as MiB (an int) as create's does
    changed = bg.pools.set("p0", memory=512)
    assert (changed.vcpus, changed.memory_mib, changed.init) == (1, 512, "fast")
    assert changed.image == made.image and changed.created_at == made.created_at
    assert bg.pools.list() == [bg.pools.get("p0")]
    # size 0: nothing to wait for
    assert bg.pools.wait_ready("p0", timeout=5).state == "empty"

    bg.pools.remove("p0")  # followed to its end: gone when it returns
    assert bg.pools.list() == []
    with pytest.raises(NotFound, match="no pool named 'p0'"):
        bg.pools.get("p0")
    removals = [
        (op.kind, op.target, op.state)
        for op in bg.client.list_ops(include_finished=True)
        if op.kind == "pool.rm"
    ]
    assert removals == [("pool.rm", "p0", "succeeded")]


@pytest.mark.parametrize(
    "call",
    [
        lambda bg: bg.pools.get("nope"),
        lambda bg: bg.pools.remove("nope"),
        lambda bg: bg.pools.wait_ready("nope", timeout=5),
    ],
)
def test_an_unknown_pool_is_not_found(bg: Banger, call: object) -> None:
    assert callable(call)
    with pytest.raises(NotFound, match="no pool named 'nope'") as caught:
        call(bg)
    assert caught.value.hint


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("image", "debian-bookworm"),
        ("kernel", "debian"),
        ("cpus", 2),
        ("memory", "1G"),
        ("disk_size", "4G"),
        ("init", "fast"),
        ("start", False),
    ],
)
def test_create_from_a_pool_refuses_what_the_pool_fixes_before_any_request(
    bg: Banger, argument: str, value: object
) -> None:
    ops_before = _op_ids(bg)
    with pytest.raises(InvalidArgument) as caught:
        bg.create("a1", pool="p", **{argument: value})  # type: ignore[arg-type]
    assert caught.value.field == argument
    assert caught.value.message.startswith(f"{argument}: a VM ")
    assert "pool" in caught.value.message
    assert bg.list() == [] and _op_ids(bg) == ops_before


def test_create_from_an_unknown_pool_is_not_found_and_takes_a_workspace(
    bg: Banger, short_tmp: Path
) -> None:
    """A workspace goes with a pool (copied onto the taken guest over SSH): the SDK
    sends it, and the daemon's answer is about the pool."""
    with pytest.raises(NotFound, match="pool: no pool named 'nope'") as caught:
        bg.create("a2", pool="nope", workspace=short_tmp)
    assert caught.value.hint
    assert bg.list() == []


def test_bad_pool_arguments_are_named(bg: Banger) -> None:
    ops_before = _op_ids(bg)
    with pytest.raises(InvalidArgument) as caught:  # refused before any request
        bg.pools.set("p1", memory="lots")
    assert caught.value.field == "memory" and caught.value.hint
    with pytest.raises(InvalidArgument) as caught:
        bg.pools.wait_ready("p1", timeout=0)
    assert caught.value.field == "timeout"
    for kwargs, field in [
        ({"size": 17}, "size"),
        ({"size": 0, "cpus": 0}, "cpus"),
        ({"size": 0, "init": "upstart"}, "init"),
    ]:
        with pytest.raises(InvalidArgument) as caught:  # the daemon's check
            bg.pools.set("p1", **kwargs)  # type: ignore[arg-type]
        assert caught.value.field == field, caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        bg.pools.set("Bad_Name", size=0)
    assert caught.value.field == "name"
    assert bg.pools.list() == [] and _op_ids(bg) == ops_before


def test_the_asyncio_sdk_has_the_same_pools(daemon: Daemon) -> None:
    async def main() -> None:
        async with aio.Banger(daemon.paths) as bg:
            made = await bg.pools.set("pa", size=0, memory="256M", init="fast")
            assert (made.memory_mib, made.state) == (256, "empty")
            assert await bg.pools.list() == [await bg.pools.get("pa")]
            assert (await bg.pools.wait_ready("pa", timeout=5)).name == "pa"
            with pytest.raises(InvalidArgument) as caught:
                await bg.create("a3", pool="pa", cpus=2)
            assert caught.value.field == "cpus"
            await bg.pools.remove("pa")
            assert await bg.pools.list() == []
            with pytest.raises(NotFound):
                await bg.pools.remove("pa")

    asyncio.run(main())


def test_wait_ready_times_out_naming_the_pool_then_raises_its_fill_error(
    short_tmp: Path,
) -> None:
    """A bangerd whose operations pause before stage retire (the fill's first): the
    size-1 pool is 'filling' for FILL_DELAY s, so a short wait_ready times out; then
    the fill fails for want of the root helper, and wait_ready raises that error."""
    env = home_env(short_tmp, BANGER_TEST_STAGE_DELAY=f"retire:{FILL_DELAY}")
    daemon = spawn_daemon(short_tmp, "--allow-root", env=env)
    try:
        wait_ready(daemon)
        with Banger(daemon.paths) as bg:
            bg.pools.set("pf", size=1, memory=256, init="fast")

            async def too_short() -> None:
                async with aio.Banger(daemon.paths) as abg:
                    with pytest.raises(PoolTimeout) as caught:
                        await abg.pools.wait_ready("pf", timeout=0.5)
                    assert caught.value.pool == "pf"

            asyncio.run(too_short())
            with pytest.raises(PoolTimeout) as caught:
                bg.pools.wait_ready("pf", timeout=0.5)
            assert isinstance(caught.value, TimeoutError)
            assert caught.value.pool == "pf" and caught.value.info.state == "filling"
            assert (
                caught.value.message == "pool pf: not ready after 0.5 s (0/1 guests ready, filling)"
            )

            with pytest.raises(PoolFailed) as failed:
                bg.pools.wait_ready("pf", timeout=FILL_DELAY + 120)
            assert failed.value.pool == "pf" and "helper" in failed.value.error
            assert failed.value.error == bg.pools.get("pf").error
            assert failed.value.message.startswith("pool pf: its last fill failed: ")
            assert failed.value.hint
            bg.pools.remove("pf")
            assert bg.pools.list() == []
    finally:
        daemon.stop()
