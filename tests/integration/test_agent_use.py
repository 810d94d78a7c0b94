"""The daemon's uses of the guest agent (banger.daemon.vms.agent_use) against the real qemu-ga.

The host's qemu-ga runs with guest-set-time blocked (it would set the host's
clock): set_clock then judges the refusal by reading the clock back, which on
the host is the host's own, so it counts as set. The real clock setting is
checked in a guest (tests/e2e/test_guest_agent_e2e.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from banger.daemon.vms import agent_use
from banger.daemon.vms.vmm_choice import AGENT_CHANNEL_KEY
from banger.guest.agent import AgentUnavailable
from banger.store import VMConfig
from tests.qga import running_qemu_ga


async def test_first_answer_waits_for_an_agent_that_starts_late(tmp_path: Path) -> None:
    sock = tmp_path / "qga.sock"
    waiting = asyncio.create_task(agent_use.first_answer(sock))
    await asyncio.sleep(1.0)  # some failed polls first; the result does not depend on it
    assert not waiting.done()
    with running_qemu_ga(sock, tmp_path / "state", wait=False):
        seconds = await asyncio.wait_for(waiting, 60)  # a hang bound
        assert seconds >= 1.0
        offset = await agent_use.set_clock(sock, seen=True)
        assert abs(offset) < 2_000_000_000


async def test_set_clock_on_a_channel_without_agent_gives_up_quickly(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"
    peers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_unix_server(lambda r, w: peers.append(w), str(path))
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(AgentUnavailable):
            await agent_use.set_clock(path, seen=False)
        assert loop.time() - start < 10  # the short bound for an agent never seen, not 10 s
    finally:
        for peer in peers:
            peer.close()
        server.close()
        await server.wait_closed()


def test_what_vm_show_says() -> None:
    assert agent_use.agent_state(VMConfig.from_json({})).startswith("none")
    assert agent_use.agent_state(VMConfig.from_json({AGENT_CHANNEL_KEY: True})) == "unknown"
    assert (
        agent_use.agent_state(VMConfig.from_json({AGENT_CHANNEL_KEY: True, "agent_seen": True}))
        == "available"
    )
    assert "SSH only" in agent_use.agent_state(
        VMConfig.from_json({AGENT_CHANNEL_KEY: True, "agent_seen": False})
    )


async def test_freeze_and_poweroff_without_an_agent_do_nothing(tmp_path: Path) -> None:
    """No channel, or a channel nobody answers: unfrozen (saying why), and SSH's turn to stop."""
    none = VMConfig.from_json({})
    freeze = agent_use.Freeze(tmp_path / "absent.sock")
    assert await freeze.freeze(none) is False
    assert freeze.note == "the VM has no guest agent channel"
    await freeze.thaw()  # nothing was asked: nothing to thaw, no error
    assert await agent_use.poweroff(tmp_path / "absent.sock", none, "fast") is None

    path = tmp_path / "silent.sock"
    peers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_unix_server(lambda r, w: peers.append(w), str(path))
    unseen = VMConfig.from_json({AGENT_CHANNEL_KEY: True, "agent_seen": False})
    try:
        freeze = agent_use.Freeze(path)
        assert await freeze.freeze(unseen) is False
        assert freeze.note.startswith("the guest agent did not answer")
        await freeze.thaw()
        assert await agent_use.poweroff(path, unseen, "systemd") is None
    finally:
        for peer in peers:
            peer.close()
        server.close()
        await server.wait_closed()


async def test_a_refused_freeze_is_thawed_and_reported(tmp_path: Path) -> None:
    """The host's agent refuses the freeze (blocked): not frozen, the reason kept."""
    sock = tmp_path / "qga.sock"
    seen = VMConfig.from_json({AGENT_CHANNEL_KEY: True, "agent_seen": True})
    with running_qemu_ga(sock, tmp_path / "state", wait=False):
        await agent_use.first_answer(sock)
        freeze = agent_use.Freeze(sock)
        assert await freeze.freeze(seen) is False
        assert "the freeze failed" in freeze.note and "guest-fsfreeze-freeze" in freeze.note
        await freeze.thaw()  # the agent answered: it froze nothing, nothing to thaw
