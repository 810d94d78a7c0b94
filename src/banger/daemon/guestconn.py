"""Held guest connections: one authenticated asyncssh connection per running VM.

A fresh SSH login costs a key exchange, an sshd re-exec and a PAM session in
the guest: 1-3 s under TCG. bangerd pays it once per boot: the connection
``wait_ssh`` opened to prove the guest answers is adopted here (:meth:`adopt`)
and reused for every guest command the daemon runs (exec, files, sessions,
stats, power-off). It is reopened transparently when it drops (the guest's
sshd restarted, a keepalive failed) and closed when the VM stops, pauses or is
removed, and when the daemon shuts down.

Channels are bounded. OpenSSH's sshd refuses more than ``MaxSessions`` (10)
open channels on one connection, so each connection carries at most
:data:`CHANNELS_PER_CONN`; when all are busy a second connection is opened, up
to :data:`CONNS_PER_VM`; past that, callers wait for a free slot
(:meth:`GuestConns.channel`). Nothing queues without bound on the guest.

The host key is pinned exactly as for every other guest connection
(:mod:`banger.guest.ssh`): no trust on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from banger.daemon.runner import Runners
from banger.errors import Conflict
from banger.guest.ssh import ExecResult, SSHError, SSHTarget, connect, run_on
from banger.store import VMRecord, VMState

log = logging.getLogger(__name__)

#: Channels one held connection carries at once (sshd's default MaxSessions is 10;
#: of the two left, one is the command runner's long-lived channel on the connection
#: it runs on (:mod:`banger.daemon.runner`; the execs it carries take no slot), the
#: other a kill's short channel when the runner is not there to deliver it).
CHANNELS_PER_CONN = 8
#: Connections per VM when every channel of the first is busy; beyond, callers wait.
CONNS_PER_VM = 4
#: Seconds a (re)connect may take before the caller gets an error.
CONNECT_TIMEOUT = 20.0
#: Keepalive: a guest that stops answering is noticed within interval x count seconds.
KEEPALIVE_INTERVAL = 15.0


@dataclass(eq=False)
class _Held:
    conn: asyncssh.SSHClientConnection
    used: int = 0


@dataclass(eq=False)
class _Pool:
    """The connections of one VM and who is using them."""

    vm_id: str
    target: SSHTarget
    held: list[_Held] = field(default_factory=list)
    connecting: int = 0
    cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    def prune(self) -> None:
        """Forget connections that closed (their users already got the error)."""
        self.held = [h for h in self.held if not h.conn.is_closed()]


class GuestConns:
    """The daemon's held guest connections, by VM id."""

    def __init__(
        self,
        known_hosts: Path,
        client_key: Path,
        *,
        port: int = 22,
        channels_per_conn: int = CHANNELS_PER_CONN,
        conns_per_vm: int = CONNS_PER_VM,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.known_hosts = known_hosts
        self.client_key = client_key
        self.port = port
        self.channels_per_conn = channels_per_conn
        self.conns_per_vm = conns_per_vm
        self.connect_timeout = connect_timeout
        self._pools: dict[str, _Pool] = {}
        self._closed = False
        #: The command runner of each VM, on one of its held connections (exec, run_quick).
        self.runners = Runners(self)

    def target(self, vm: VMRecord, *, any_state: bool = False) -> SSHTarget:
        """Where ``vm``'s sshd answers, with banger's pinned host key and client key.

        A VM that is not running is a :class:`Conflict`, unless ``any_state``
        (power-off asks a VM that is already marked stopping or was paused).
        """
        if vm.ip is None or (vm.state != VMState.RUNNING and not any_state):
            raise Conflict(
                f"VM {vm.name} is {vm.state.value}, not running",
                hint=f"start it first: banger vm start {vm.name}",
            )
        return SSHTarget(str(vm.ip), self.known_hosts, self.client_key, self.port)

    def _pool(self, vm: VMRecord, any_state: bool = False) -> _Pool:
        if self._closed:
            raise SSHError("bangerd is shutting down: no new guest connections")
        target = self.target(vm, any_state=any_state)
        pool = self._pools.get(vm.id)
        if pool is not None and pool.target != target:
            # Same VM, new address (a restart took another lease): the old ones are dead.
            self.runners.forget(vm.id)
            self._close_pool(self._pools.pop(vm.id))
            pool = None
        if pool is None:
            pool = self._pools[vm.id] = _Pool(vm.id, target)
        return pool

    def adopt(self, vm: VMRecord, conn: asyncssh.SSHClientConnection) -> None:
        """Keep the connection that proved ``vm`` answers (``wait_ssh``) as its first."""
        if self._closed or vm.ip is None:
            conn.close()
            return
        target = SSHTarget(str(vm.ip), self.known_hosts, self.client_key, self.port)
        old = self._pools.pop(vm.id, None)
        if old is not None:
            self.runners.forget(vm.id)
            self._close_pool(old)
        self._pools[vm.id] = _Pool(vm.id, target, [_Held(conn)])
        self.runners.prestart(vm, conn)

    async def _connect(self, target: SSHTarget, timeout: float) -> asyncssh.SSHClientConnection:
        return await connect(target, timeout, keepalive=KEEPALIVE_INTERVAL)

    async def get(self, vm: VMRecord) -> asyncssh.SSHClientConnection:
        """An open connection to ``vm`` (reconnecting if it dropped), without reserving a channel.

        For work that opens one short-lived channel; anything that may run long
        or in numbers should take a slot with :meth:`channel`.
        """
        pool = self._pool(vm)
        async with pool.cond:
            pool.prune()
            if pool.held:
                return min(pool.held, key=lambda h: h.used).conn
        async with self.channel(vm) as conn:
            return conn

    @contextlib.asynccontextmanager
    async def channel(
        self, vm: VMRecord, *, any_state: bool = False, connect_timeout: float | None = None
    ) -> AsyncIterator[asyncssh.SSHClientConnection]:
        """A connection to ``vm`` with one channel slot reserved for the block's duration.

        Waits while every slot of every connection (``conns_per_vm`` x
        ``channels_per_conn``) is taken; opens a connection when none is free
        and the VM has fewer than ``conns_per_vm``. ``connect_timeout`` bounds a
        (re)connect it needs (default: the pool's).
        """
        pool = self._pool(vm, any_state)
        held = await self._reserve(pool, connect_timeout or self.connect_timeout)
        try:
            yield held.conn
        finally:
            async with pool.cond:
                held.used -= 1
                pool.cond.notify_all()

    async def _reserve(self, pool: _Pool, connect_timeout: float) -> _Held:
        async with pool.cond:
            while True:
                pool.prune()
                free = [h for h in pool.held if h.used < self.channels_per_conn]
                if free:
                    held = min(free, key=lambda h: h.used)
                    held.used += 1
                    return held
                # One connect at a time: 16 callers arriving together need two, not four.
                if pool.connecting == 0 and len(pool.held) < self.conns_per_vm:
                    pool.connecting += 1
                    break
                await pool.cond.wait()
        try:
            conn = await self._connect(pool.target, connect_timeout)
        except BaseException:
            async with pool.cond:
                pool.connecting -= 1
                pool.cond.notify_all()
            raise
        async with pool.cond:
            pool.connecting -= 1
            held = _Held(conn, used=1)
            if self._closed or self._pools.get(pool.vm_id) is not pool:
                conn.close()  # dropped (stop, pause, shutdown) while we were connecting
                pool.cond.notify_all()
                raise SSHError(f"the connection to {pool.target.where} was closed")
            pool.held.append(held)
            pool.cond.notify_all()
            return held

    async def run(
        self,
        vm: VMRecord,
        command: Sequence[str] | str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        any_state: bool = False,
    ) -> ExecResult:
        """Run one command on the held connection (:func:`banger.guest.ssh.run_on`)."""
        async with self.channel(vm, any_state=any_state) as conn:
            return await run_on(conn, command, env=env, cwd=cwd, stdin=stdin, timeout=timeout)

    def held(self, vm_id: str) -> int:
        """How many connections ``vm_id`` has open now (for tests and stats)."""
        pool = self._pools.get(vm_id)
        if pool is None:
            return 0
        pool.prune()
        return len(pool.held)

    async def drop(self, vm_id: str) -> None:
        """Close ``vm_id``'s connections (it stops, pauses or is removed); users get an error."""
        self.runners.forget(vm_id)
        pool = self._pools.pop(vm_id, None)
        if pool is not None:
            await self._wait_closed(self._close_pool(pool))

    async def close(self) -> None:
        """Close everything (daemon shutdown); later calls fail."""
        self._closed = True
        self.runners.close()
        pools, self._pools = list(self._pools.values()), {}
        conns = [c for pool in pools for c in self._close_pool(pool)]
        await self._wait_closed(conns)

    @staticmethod
    def _close_pool(pool: _Pool) -> list[asyncssh.SSHClientConnection]:
        conns = [h.conn for h in pool.held]
        pool.held = []
        for conn in conns:
            conn.close()
        return conns

    @staticmethod
    async def _wait_closed(conns: list[asyncssh.SSHClientConnection]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
