"""Pulls and ``image prune`` exclude each other over the OCI layer cache.

A pull's blobs are referenced by no image until its row is recorded, so a
prune running meanwhile would delete them under it. Any number of pulls hold
the gate shared (from their download until their row exists or they fail); a
prune holds it alone. A prune that arrives while pulls run waits for them,
and pulls that arrive after it wait behind it, so neither side starves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CacheGate:
    """A shared/exclusive lock over the OCI cache (asyncio; one daemon, one loop)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and not self._waiting_exclusive)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            self._waiting_exclusive += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting_exclusive -= 1
                self._cond.notify_all()  # a cancelled prune must not keep pulls waiting
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()
