"""daemon/cache_gate.py: pulls share the OCI cache, a prune has it alone (issue #22 item 5)."""

from __future__ import annotations

import asyncio

from banger.daemon.cache_gate import CacheGate


async def test_prune_waits_for_running_pulls_and_later_pulls_wait_for_it() -> None:
    gate = CacheGate()
    order: list[str] = []
    pull_a_holds, release_a = asyncio.Event(), asyncio.Event()

    async def pull_a() -> None:
        async with gate.shared():
            order.append("a in")
            pull_a_holds.set()
            await release_a.wait()
            order.append("a out")

    async def prune() -> None:
        async with gate.exclusive():
            order.append("prune")

    async def pull_b() -> None:
        async with gate.shared():
            order.append("b")

    a = asyncio.create_task(pull_a())
    await pull_a_holds.wait()
    p = asyncio.create_task(prune())
    await asyncio.sleep(0)  # the prune is queued behind pull a
    b = asyncio.create_task(pull_b())
    await asyncio.sleep(0)
    assert order == ["a in"]  # neither the prune nor the later pull got in
    release_a.set()
    await asyncio.gather(a, p, b)
    assert order == ["a in", "a out", "prune", "b"]


async def test_a_cancelled_prune_lets_pulls_in() -> None:
    gate = CacheGate()
    holding = asyncio.Event()
    release = asyncio.Event()

    async def pull() -> None:
        async with gate.shared():
            holding.set()
            await release.wait()

    async def prune() -> None:
        async with gate.exclusive():
            pass

    first = asyncio.create_task(pull())
    await holding.wait()
    p = asyncio.create_task(prune())
    await asyncio.sleep(0)
    p.cancel()
    second_in = asyncio.Event()

    async def second() -> None:
        async with gate.shared():
            second_in.set()

    s = asyncio.create_task(second())
    await asyncio.wait_for(second_in.wait(), 5)  # hang bound only
    release.set()
    await asyncio.gather(first, s)
