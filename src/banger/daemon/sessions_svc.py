"""SessionService: the daemon's side of ``banger session`` (records + guest tmux sessions).

Every session has a store record (name unique per VM, argv, state, exit
status, times) and a directory + tmux session in the guest
(:mod:`banger.guest.sessions`). The store is reconciled with the guest when
sessions are listed and when the daemon starts: a session that ended while
nobody watched gets its exit status; the open sessions of a VM that is not
running (stopped, failed, rebooted) become *lost* (state ``lost``, no exit
status). An exited session's ``ended_at`` is the guest's own record of when it
ended, not when the daemon noticed.

Starting a session and reconciling one VM's records are serialised per VM
(a listing taken while a start is half done would call the new session
lost). Neither takes the VM's lifecycle lock: a session operation is a few
SSH round trips and must not queue behind a long workspace transfer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncssh

from banger.daemon.vms.service import VMService
from banger.disk import ext4
from banger.errors import BangerError, Conflict, NotFound
from banger.guest import sessions as guest
from banger.guest.session_scripts import DEFAULT_LAYOUT, GuestLayout, run_file
from banger.guest.sessions import LogChunk, SessionEnded, SessionStatus
from banger.store import SessionRecord, SessionState, VMRecord, VMState

log = logging.getLogger(__name__)

#: Where the work disk is mounted in the guest (session logs live on it).
GUEST_ROOT = "/root"

CONNECT_TIMEOUT = 30.0
#: Startup reconciliation must not hold the daemon up for an unreachable guest.
STARTUP_CONNECT_TIMEOUT = 10.0


# --- reconciliation of the stored records with the guest -----------------------


@dataclass(frozen=True)
class SessionUpdate:
    """A change to apply to one stored session record."""

    session_id: str
    name: str
    state: SessionStatus
    exit_status: int | None = None
    ended_at: datetime | None = None


_OPEN = (SessionState.STARTING, SessionState.RUNNING)


def reconcile(
    records: Iterable[SessionRecord], listing: guest.GuestListing | None
) -> list[SessionUpdate]:
    """Updates that bring stored records in line with the guest.

    ``listing`` is the guest's listing, or None when the VM is not running (every
    open session of a stopped VM is lost). Finished records never change: a
    session, once exited or lost, stays so. A record the guest does not know
    (its directory was removed, the work disk was replaced) is lost.
    """
    updates: list[SessionUpdate] = []
    for record in records:
        if record.state not in _OPEN:
            continue
        seen = listing.find(record.name) if listing is not None else None
        if seen is None or seen.state is SessionStatus.LOST:
            updates.append(SessionUpdate(record.id, record.name, SessionStatus.LOST))
        elif seen.state is SessionStatus.EXITED:
            updates.append(
                SessionUpdate(
                    record.id, record.name, SessionStatus.EXITED, seen.exit_status, seen.ended_at
                )
            )
        elif record.state is SessionState.STARTING:
            updates.append(SessionUpdate(record.id, record.name, SessionStatus.RUNNING))
    return updates


def shown_state(record: SessionRecord) -> str:
    """What users see: running, exited or lost."""
    if record.state in (SessionState.LOST, SessionState.FAILED):  # failed: never since v4
        return SessionStatus.LOST.value
    if record.state is SessionState.STARTING:
        return SessionStatus.RUNNING.value
    return record.state.value


@dataclass(frozen=True)
class SessionView:
    vm: str
    record: SessionRecord

    @property
    def state(self) -> str:
        return shown_state(self.record)


def _running(vm: VMRecord, vms: VMService) -> bool:
    return vm.state == VMState.RUNNING and vm.ip is not None and vms.alive(vm)


def _require_running(vm: VMRecord, vms: VMService) -> None:
    if not _running(vm, vms):
        raise Conflict(
            f"VM {vm.name} is {vm.state.value}, not running",
            hint=f"start it first: banger vm start {vm.name}",
        )


class SessionService:
    def __init__(self, vms: VMService, layout: GuestLayout = DEFAULT_LAYOUT) -> None:
        self.vms = vms
        self.store = vms.store
        self.layout = layout
        self._vm_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- plumbing ---------------------------------------------------------------
    async def _vm(self, ref: str) -> VMRecord:
        return await asyncio.to_thread(self.store.resolve_vm, ref)

    @asynccontextmanager
    async def _connect(
        self, vm: VMRecord, timeout: float = CONNECT_TIMEOUT
    ) -> AsyncIterator[asyncssh.SSHClientConnection]:
        _require_running(vm, self.vms)
        # The VM's held connection (issue #17): no SSH handshake per session call.
        async with self.vms.pipeline.conns.channel(vm, connect_timeout=timeout) as conn:
            yield conn

    async def _record(self, vm: VMRecord, name: str) -> SessionRecord:
        guest.validate_name(name)
        try:
            return await asyncio.to_thread(self.store.get_session_by_name, vm.id, name)
        except NotFound:
            raise NotFound(
                f"VM {vm.name} has no session named {name!r}",
                hint=f"banger session list {vm.name} shows them",
            ) from None

    async def _apply(self, updates: Sequence[SessionUpdate]) -> None:
        for update in updates:
            if update.state is SessionStatus.LOST:
                state, status = SessionState.LOST, None
            elif update.state is SessionStatus.EXITED:
                state, status = SessionState.EXITED, update.exit_status
            else:
                state, status = SessionState.RUNNING, None
            await asyncio.to_thread(
                self.store.update_session,
                update.session_id,
                state=state,
                exit_status=status,
                ended_at=update.ended_at if state.finished else None,
            )

    async def _reconcile_vm(
        self, vm: VMRecord, timeout: float = CONNECT_TIMEOUT
    ) -> list[SessionRecord]:
        """Bring one VM's records in line with its guest; return them afterwards."""
        async with self._vm_locks[vm.id]:
            records = await asyncio.to_thread(self.store.list_sessions, vm.id)
            if not any(not r.state.finished for r in records):
                return records
            if vm.state == VMState.PAUSED:
                return records  # frozen, not gone: nothing to learn and nothing lost
            listing: guest.GuestListing | None = None
            if _running(vm, self.vms):
                try:
                    async with self._connect(vm, timeout) as conn:
                        listing = await guest.listing(conn, self.layout)
                except BangerError as exc:
                    # unreachable is not proof of loss: keep the records as they are
                    log.warning("sessions of %s not reconciled: %s", vm.name, exc.message)
                    return records
            await self._apply(reconcile(records, listing))
            return await asyncio.to_thread(self.store.list_sessions, vm.id)

    # -- API --------------------------------------------------------------------
    async def reconcile_all(self) -> int:
        """At daemon start: reconcile every VM concurrently; returns how many records changed."""
        vms = await asyncio.to_thread(self.store.list_vms)
        before = {r.id: r.state for r in await asyncio.to_thread(self.store.list_sessions)}
        await asyncio.gather(
            *(self._reconcile_vm(vm, STARTUP_CONNECT_TIMEOUT) for vm in vms),
            return_exceptions=True,
        )
        after = await asyncio.to_thread(self.store.list_sessions)
        return sum(1 for r in after if before.get(r.id) != r.state)

    async def list(self, ref: str | None = None) -> list[SessionView]:
        vms = [await self._vm(ref)] if ref else await asyncio.to_thread(self.store.list_vms)
        views: list[SessionView] = []
        for vm in vms:
            for record in await self._reconcile_vm(vm):
                views.append(SessionView(vm.name, record))
        return views

    async def show(self, ref: str, name: str) -> SessionView:
        vm = await self._vm(ref)
        await self._reconcile_vm(vm)
        return SessionView(vm.name, await self._record(vm, name))

    async def start(
        self,
        ref: str,
        argv: Sequence[str],
        *,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> SessionView:
        vm = await self._vm(ref)
        if name is not None:  # a taken name says so whatever the VM's state
            await self._refuse_taken(vm, guest.validate_name(name))
        _require_running(vm, self.vms)
        name = guest.validate_name(name) if name is not None else guest.generate_name(argv)
        # The image's WorkingDir (unless the request says where) and User, as
        # `docker run` applies them (issue #22 item 6).
        image = await asyncio.to_thread(self.vms._image_defaults, vm)
        if cwd is None and image is not None:
            cwd = image.working_dir or None
        user = image.user or None if image is not None else None
        # the guest checks the argv, cwd and env too; checking first keeps bad input
        # from leaving a record behind
        run_file(self.layout, name, argv, cwd, env, user)
        async with self._vm_locks[vm.id]:
            await self._refuse_taken(vm, name)
            record = await asyncio.to_thread(self.store.create_session, vm.id, name, list(argv))
            try:
                async with self._connect(vm) as conn:
                    await guest.start(
                        conn, argv, name=name, cwd=cwd, env=env, layout=self.layout, user=user
                    )
            except BaseException:
                await asyncio.to_thread(self.store.delete_session, record.id)
                raise
            record = await asyncio.to_thread(
                self.store.update_session, record.id, state=SessionState.RUNNING
            )
        return SessionView(vm.name, record)

    async def _refuse_taken(self, vm: VMRecord, name: str) -> None:
        """A name in use says what to do with the session holding it."""
        try:
            taken = await asyncio.to_thread(self.store.get_session_by_name, vm.id, name)
        except NotFound:
            return
        view = SessionView(vm.name, taken)
        if taken.state.finished:
            raise Conflict(
                f"VM {vm.name} already has a session named {name!r} ({view.state})",
                hint=f"banger session rm {vm.name} {name} frees the name"
                f" (banger session logs {vm.name} {name} shows its output first)",
            )
        raise Conflict(
            f"VM {vm.name} already has a session named {name!r} (running)",
            hint=f"banger session attach {vm.name} {name}, or pick another name",
        )

    async def logs(self, ref: str, name: str, tail: int | None) -> bytes:
        """The log; from the work disk itself while the VM is stopped (the log is there)."""
        vm = await self._vm(ref)
        await self._record(vm, name)
        if vm.state == VMState.STOPPED and not self.vms.alive(vm):
            disk = self.vms.paths.vm_work_disk(vm.id)
            return await asyncio.to_thread(offline_log, disk, self.layout, name, tail)
        async with self._connect(vm) as conn:
            return await guest.logs(conn, name, tail=tail, layout=self.layout)

    async def follow(
        self, ref: str, name: str, tail: int | None
    ) -> AsyncGenerator[LogChunk | SessionView, None]:
        """The log (its last ``tail`` lines, or all), then new output until the session ends.

        The last item is the session's record after the end (reconciled, so it
        carries the exit status).
        """
        vm = await self._vm(ref)
        await self._record(vm, name)
        async with self._connect(vm) as conn:
            offset = 0
            if tail is not None:
                # `tail -n` counts lines, a follow counts bytes: read it all once,
                # send the last lines, follow from the end
                whole = await guest.logs(conn, name, layout=self.layout)
                offset = len(whole)
                kept = b"".join(whole.splitlines(keepends=True)[-tail:]) if tail else b""
                if kept:
                    yield LogChunk(kept, offset - len(kept))
            stream = guest.follow(conn, name, offset=offset, layout=self.layout)
            async with aclosing(stream):  # a client that leaves stops the guest's tail
                async for event in stream:
                    if isinstance(event, SessionEnded):
                        break
                    yield event
        vm = await asyncio.to_thread(self.store.get_vm, vm.id)
        await self._reconcile_vm(vm)
        yield SessionView(vm.name, await self._record(vm, name))

    async def send(self, ref: str, name: str, text: str, enter: bool) -> None:
        vm = await self._vm(ref)
        await self._record(vm, name)
        async with self._connect(vm) as conn:
            await guest.send(conn, name, text, enter=enter, layout=self.layout)

    async def stop(
        self, ref: str, name: str, signal: str, timeout: float
    ) -> tuple[str, SessionView]:
        vm = await self._vm(ref)
        record = await self._record(vm, name)
        async with self._connect(vm) as conn:
            result = await guest.stop(
                conn, name, signal=signal, timeout=timeout, layout=self.layout
            )
        update = SessionUpdate(
            record.id, name, result.info.state, result.info.exit_status, result.info.ended_at
        )
        await self._apply([update])
        return result.outcome, SessionView(vm.name, await self._record(vm, name))

    async def remove(self, ref: str, name: str) -> None:
        """Forget a finished session: its guest directory (log) and its record."""
        vm = await self._vm(ref)
        record = await self._record(vm, name)
        if _running(vm, self.vms):
            async with self._connect(vm) as conn:
                # already gone in the guest is fine (a new work disk, or removed by hand)
                with suppress(NotFound):
                    await guest.forget(conn, name, self.layout)
        elif not record.state.finished:
            raise Conflict(
                f"session {name!r} of VM {vm.name} may still be running",
                hint=f"start the VM so banger can check: banger vm start {vm.name}",
            )
        await asyncio.to_thread(self.store.delete_session, record.id)

    async def attach_check(self, ref: str, name: str) -> SessionView:
        """Before the CLI runs ``ssh -t … tmux attach``: the VM runs and the session does."""
        view = await self.show(ref, name)
        if view.state != SessionStatus.RUNNING.value:
            raise Conflict(
                f"session {name!r} of VM {view.vm} is {view.state}, not running",
                hint=f"banger session logs {view.vm} {name} shows its output",
            )
        return view


def offline_log(disk: Path, layout: GuestLayout, name: str, tail: int | None) -> bytes:
    """A session's log read from a stopped VM's work disk (mounted at /root in the guest)."""
    root = layout.root.removeprefix(GUEST_ROOT)
    if root == layout.root:
        raise Conflict(f"session logs: {layout.root} is not on the work disk; start the VM")
    try:
        data = ext4.read_file(disk, f"{root}/{guest.validate_name(name)}/log")
    except NotFound:
        raise NotFound(
            f"no log of session {name!r} on the VM's work disk",
            hint="the session's directory was removed in the guest",
        ) from None
    if tail is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
