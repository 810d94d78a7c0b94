"""An undo stack: every resource a pipeline stage takes registers how to give it back.

On failure the undos run newest first; each runs even if an earlier one
failed (its error is logged), so one stuck resource never strands the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Undo = Callable[[], Awaitable[None]]


class UndoStack:
    def __init__(self) -> None:
        self._items: list[tuple[str, Undo]] = []

    def push(self, what: str, undo: Undo) -> None:
        self._items.append((what, undo))

    def __len__(self) -> int:
        return len(self._items)

    async def unwind(self) -> list[str]:
        """Run every undo, newest first; returns the failures, one line each."""
        failures = []
        while self._items:
            what, undo = self._items.pop()
            try:
                await undo()
            except Exception as exc:  # every undo must get its turn
                log.warning("undo %s failed: %s", what, exc)
                failures.append(f"{what}: {exc}")
        return failures

    def discard(self) -> None:
        """Success: the resources now belong to the VM (its delete gives them back)."""
        self._items.clear()
