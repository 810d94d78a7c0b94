"""Held guest connections (issue #17 item 1) against a real sshd on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from banger.daemon.guestconn import GuestConns
from banger.errors import Conflict
from banger.guest.ssh import SSHError, connect_when_ready, wait_for_ssh
from banger.store import VMState
from tests.sshd import Sshd, needs_sshd, sshd_fixture, vm_record  # noqa: F401 (provides the sshd fixture)
from tests.support import async_wait_until, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_sshd]


def conns_for(sshd: Sshd) -> GuestConns:
    t = sshd.target
    return GuestConns(t.known_hosts, t.client_key, port=t.port)


async def test_adopted_connection_is_reused_then_reopened_after_a_drop(sshd: Sshd) -> None:
    conns = conns_for(sshd)
    vm = vm_record()
    first = await connect_when_ready(sshd.target, 30)
    conns.adopt(vm, first)
    try:
        assert await conns.get(vm) is first  # no second login
        result = await conns.run(vm, ["sh", "-c", "echo $0", "hi"])
        assert (result.exit_status, result.out) == (0, "hi\n")
        assert conns.held(vm.id) == 1
        # The connection drops (its sshd process killed): the next call logs in again.
        first.abort()
        await first.wait_closed()
        again = await conns.run(vm, "echo back")
        assert again.out == "back\n"
        assert (await conns.get(vm)) is not first
        assert conns.held(vm.id) == 1
    finally:
        await conns.close()
    with pytest.raises(SSHError, match="shutting down"):
        await conns.get(vm)


async def test_channels_are_bounded_and_overflow_opens_a_second_connection(sshd: Sshd) -> None:
    conns = GuestConns(
        sshd.target.known_hosts,
        sshd.target.client_key,
        port=sshd.target.port,
        channels_per_conn=2,
        conns_per_vm=2,
    )
    vm = vm_record()
    await wait_for_ssh(sshd.target, 30)
    running = 0
    peak = 0
    gate = asyncio.Event()

    async def one(i: int) -> str:
        nonlocal running, peak
        async with conns.channel(vm) as conn:
            running += 1
            peak = max(peak, running)
            if running == 4:
                gate.set()
            await gate.wait()  # the first four hold their slots until all four have one
            result = await conn.run(f"echo {i}", check=False)
            running -= 1
            return str(result.stdout)

    try:
        outs = await asyncio.gather(*(one(i) for i in range(10)))
        assert sorted(outs) == sorted(f"{i}\n" for i in range(10))
        assert peak == 4  # 2 connections x 2 channels, never more
        assert conns.held(vm.id) == 2
    finally:
        await conns.close()


async def test_drop_closes_and_state_is_checked(sshd: Sshd) -> None:
    conns = conns_for(sshd)
    vm = vm_record()
    await wait_for_ssh(sshd.target, 30)
    await async_wait_until(lambda: _children_sync(sshd) == 0, 10, "the probe's login to end")
    try:
        await conns.run(vm, "true")
        await async_wait_until(lambda: _children_sync(sshd) == 1, 10, "one held login")
        await conns.drop(vm.id)
        assert conns.held(vm.id) == 0
        await async_wait_until(lambda: _children_sync(sshd) == 0, 10, "the login closed")
        with pytest.raises(Conflict, match="paused, not running"):
            await conns.get(dataclasses.replace(vm, state=VMState.PAUSED))
    finally:
        await conns.close()


def _children_sync(sshd: Sshd) -> int:
    assert sshd.proc is not None
    text = Path(f"/proc/{sshd.proc.pid}/task/{sshd.proc.pid}/children").read_text()
    return len(text.split())
