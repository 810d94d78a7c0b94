"""A run-time check of lock rule 2: no task waits for a VM lock while holding one.

Enabled with ``BANGER_DEBUG_LOCKS=1`` (read once when the VM service is
built; the test suites set it). The VM lock a task holds is kept in a
context variable, so it follows the task and the tasks it spawns: a child
task that takes another VM's lock while its parent still holds one (and may
be waiting for the child) is caught too. Asking for the same VM's lock again
is also refused: ``asyncio.Lock`` is not re-entrant, so that would hang.

A violation is logged with :data:`MARKER` and raised as
:class:`LockOrderViolation` before the second lock is requested, so the
operation fails loudly instead of deadlocking later under load.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger(__name__)

DEBUG_LOCKS_ENV = "BANGER_DEBUG_LOCKS"
MARKER = "lock order violation"

_held: ContextVar[str | None] = ContextVar("banger_vm_lock_held", default=None)


class LockOrderViolation(AssertionError):
    """A task asked for a VM lock while holding one (a bug in banger)."""


class LockOrderCheck:
    def __init__(self) -> None:
        #: One line per violation seen (tests read it; the log has them too).
        self.violations: list[str] = []
        #: How many acquisitions were checked (a test can tell the check ran).
        self.checked = 0

    @contextmanager
    def taking(self, vm_id: str) -> Iterator[None]:
        """Wrap one acquisition of ``vm_id``'s lock, from the request to the release."""
        self.checked += 1
        held = _held.get()
        if held is not None:
            what = (
                f"VM lock {vm_id} requested again by a task holding it"
                if held == vm_id
                else f"VM lock {vm_id} requested while holding VM lock {held}"
            )
            self.violations.append(what)
            log.error("%s: %s", MARKER, what)
            raise LockOrderViolation(f"{MARKER}: {what}")
        token = _held.set(vm_id)
        try:
            yield
        finally:
            _held.reset(token)


def held_vm_lock() -> str | None:
    """The VM lock the current task holds (when the check is on), else None."""
    return _held.get()
