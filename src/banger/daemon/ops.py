"""The Operations service: named, staged, observable long-running work.

Every multi-step job in the daemon (start a VM, pull an image, …) runs as an
operation::

    async with ops.run("vm.start", vm_id) as op:
        await op.stage("prepare_work_disk")
        await op.event("warning", "skipped ~/.netrc: missing")

The store keeps the record and its events (so ``banger ops show`` works after
the fact); this service adds the live side: an in-process pub/sub that wakes
event followers the moment something is appended (no polling), failure
bookkeeping (the failing stage, the error and its hint stay on the record),
and a bounded drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from banger.api_models import Operation, OpEvent
from banger.daemon import stage_delay
from banger.daemon.records import event_model, operation_model
from banger.errors import BangerError, DaemonUnavailable
from banger.store import OpState, Store
from banger.store.errors import DatabaseFull, StoreError

log = logging.getLogger(__name__)

#: Event kinds written by this service; services add their own (info, warning, …).
#: The last event of every operation has the kind of its final state.
EV_STARTED = "started"
EV_STAGE = "stage"


@dataclass
class _Live:
    """The in-memory side of a running operation: its task and its wake-up."""

    task: asyncio.Task[Any] | None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    version: int = 0
    finished: bool = False

    async def bump(self, *, finished: bool = False) -> None:
        async with self.changed:
            self.version += 1
            self.finished = self.finished or finished
            self.changed.notify_all()


class OpHandle:
    """What the code running an operation uses to report progress."""

    def __init__(self, ops: Operations, op_id: str, kind: str, target: str) -> None:
        self._ops = ops
        self.id = op_id
        self.kind = kind
        self.target = target
        self.current_stage: str | None = None

    async def stage(self, name: str, message: str | None = None) -> None:
        """Enter stage ``name``; a failure from here on is recorded against it."""
        self.current_stage = name
        await asyncio.to_thread(self._ops.store.update_operation, self.id, stage=name)
        await self._ops.publish(self.id, EV_STAGE, name, message or name, {})
        await stage_delay.pause(name, self.id)  # test-only hook; inert unless set at start

    async def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        try:
            await self._ops.publish(self.id, kind, self.current_stage, message, dict(data or {}))
        except DatabaseFull as exc:
            # A progress line is not worth failing the operation for: whatever filled
            # the disk fails on its own, with its own message (and frees its space).
            log.warning("op %s: event not recorded (%s): %s", self.id, exc.message, message)


class Operations:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._live: dict[str, _Live] = {}
        self._accepting = True
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- start-up ----------------------------------------------------------------
    def fail_interrupted(self) -> int:
        """Mark operations a previous daemon left running as failed; returns how many."""
        count = 0
        for record in self.store.list_operations(include_finished=False, limit=10_000):
            op = operation_model(record)
            if op.finished:
                continue
            message = "interrupted: bangerd stopped while this operation was running"
            self.store.update_operation(
                op.id, state=OpState.FAILED, error=message, hint="run the command again"
            )
            self.store.append_event(
                op.id, OpState.FAILED.value, op.stage, message, {"exit_code": 1}
            )
            count += 1
        return count

    # -- running operations --------------------------------------------------------
    @asynccontextmanager
    async def run(self, kind: str, target: str) -> AsyncIterator[OpHandle]:
        """Run an operation in the current task; failures are recorded, then re-raised."""
        handle = await self._begin(kind, target, asyncio.current_task())
        try:
            yield handle
        except BaseException as exc:
            await self._finish_failed(handle, exc)
            raise
        await self._finish(handle, OpState.SUCCEEDED, None, None, {})

    async def start(
        self, kind: str, target: str, body: Callable[[OpHandle], Awaitable[None]]
    ) -> Operation:
        """Run ``body`` as a background operation and return its record at once."""
        handle = await self._begin(kind, target, None)
        live = self._live[handle.id]
        live.task = asyncio.create_task(self._drive(handle, body), name=f"op-{handle.id}")
        return await self.get(handle.id)

    async def _drive(self, handle: OpHandle, body: Callable[[OpHandle], Awaitable[None]]) -> None:
        try:
            await body(handle)
        except BaseException as exc:
            await self._finish_failed(handle, exc)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            return
        await self._finish(handle, OpState.SUCCEEDED, None, None, {})

    async def _begin(self, kind: str, target: str, task: asyncio.Task[Any] | None) -> OpHandle:
        if not self._accepting:
            raise DaemonUnavailable(
                "bangerd is shutting down and accepts no new operations",
                hint="retry in a moment",
            )
        record = await asyncio.to_thread(self.store.create_operation, kind, target)
        op = operation_model(record)
        await asyncio.to_thread(self.store.update_operation, op.id, state=OpState.RUNNING)
        self._live[op.id] = _Live(task)
        self._idle.clear()
        handle = OpHandle(self, op.id, kind, target)
        await self.publish(op.id, EV_STARTED, None, f"{kind} {target}", {})
        log.info("op %s started: %s %s", op.id, kind, target)
        return handle

    async def _finish_failed(self, handle: OpHandle, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            # Task.cancel(msg) carries why (vm rm --force, shutdown…); none: the usual causes
            why = str(exc.args[0]) if exc.args and exc.args[0] else None
            await self._finish(
                handle,
                OpState.FAILED,
                f"cancelled: {why or 'bangerd stopped or the request went away'}",
                "run the command again",
                {"exit_code": 1, "cancelled": True},
            )
        elif isinstance(exc, BangerError):
            log.warning("op %s failed at %s: %s", handle.id, handle.current_stage, exc.message)
            await self._finish(
                handle, OpState.FAILED, exc.message, exc.hint, {"exit_code": exc.exit_code}
            )
        else:
            log.error("op %s crashed at %s", handle.id, handle.current_stage, exc_info=exc)
            await self._finish(
                handle,
                OpState.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                "this is a bug in banger; the daemon log has the traceback",
                {"exit_code": 1},
            )

    async def _finish(
        self,
        handle: OpHandle,
        state: OpState,
        error: str | None,
        hint: str | None,
        data: dict[str, Any],
    ) -> None:
        try:
            await asyncio.to_thread(
                self.store.update_operation, handle.id, state=state, error=error, hint=hint
            )
            if hint is not None:
                data = {**data, "hint": hint}
            await self.publish(
                handle.id, state.value, handle.current_stage, error or "done", data, final=True
            )
            log.info("op %s %s", handle.id, state)
        except StoreError as exc:
            # The end could not be recorded (a full disk): followers must still be let go,
            # and the next start marks the op failed as interrupted.
            log.error("op %s %s (%s), but the store could not record it: %s",
                      handle.id, state, error or "done", exc.message)  # fmt: skip
            live = self._live.get(handle.id)
            if live is not None:
                await live.bump(finished=True)
        finally:
            self._live.pop(handle.id, None)
            if not self._live:
                self._idle.set()

    async def publish(
        self,
        op_id: str,
        kind: str,
        stage: str | None,
        message: str,
        data: dict[str, Any],
        *,
        final: bool = False,
    ) -> None:
        await asyncio.to_thread(self.store.append_event, op_id, kind, stage, message, data)
        live = self._live.get(op_id)
        if live is not None:
            await live.bump(finished=final)

    # -- reading -------------------------------------------------------------------
    async def get(self, op_id: str) -> Operation:
        return operation_model(await asyncio.to_thread(self.store.get_operation, op_id))

    async def list(self, *, include_finished: bool, limit: int = 200) -> list[Operation]:
        records = await asyncio.to_thread(
            self.store.list_operations, include_finished=include_finished, limit=limit
        )
        return [operation_model(r) for r in records]

    def is_live(self, op_id: str) -> bool:
        return op_id in self._live

    async def follow(self, op_id: str, after_seq: int = 0) -> AsyncIterator[OpEvent]:
        """The op's events after ``after_seq``, then new ones as they come, until it ends.

        The caller must have checked that the op exists (``get``), so a 404 is
        answered before a streaming response starts.
        """
        live = self._live.get(op_id)
        last = after_seq
        while True:
            seen = live.version if live is not None else 0
            for record in await asyncio.to_thread(self.store.events_since, op_id, last):
                event = event_model(record)
                last = event.seq
                yield event
            if live is None or self._closing:
                return
            async with live.changed:
                if live.finished and live.version == seen:
                    return
                await live.changed.wait_for(partial(self._moved_on, live, seen))

    def _moved_on(self, live: _Live, seen: int) -> bool:
        return live.version != seen or self._closing

    # -- shutdown ------------------------------------------------------------------
    async def drain(self, grace: float) -> None:
        """Refuse new operations, give running ones ``grace`` seconds, then cancel them."""
        self._accepting = False
        if self._live:
            log.info("waiting up to %.1fs for %d running operation(s)", grace, len(self._live))
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            await self.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel every running operation and wait (bounded) for it to record that."""
        self._accepting = False
        tasks = [live.task for live in self._live.values() if live.task is not None]
        for task in tasks:
            task.cancel("bangerd is shutting down")
        if tasks:
            log.warning("cancelled %d running operation(s)", len(tasks))
            await asyncio.wait(tasks, timeout=5.0)

    async def close_streams(self) -> None:
        """End every event stream (the server is going away)."""
        self._closing = True
        for live in list(self._live.values()):
            await live.bump()


__all__ = ["OpHandle", "Operations"]
