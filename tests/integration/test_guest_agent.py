"""banger.guest.agent against the real ``qemu-ga`` (Debian's qemu-guest-agent) on the host.

``qemu-ga -m unix-listen`` serves the same protocol a guest's agent serves over
virtio-serial. Commands that would act on the host (setting its clock, freezing
its filesystems, shutting it down) are blocked with ``-b``, so these tests only
run harmless ones for real and check that the client reports a refused command
clearly; the real effect of those is tested against a guest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from banger.guest.agent import (
    AgentCommandError,
    AgentUnavailable,
    GuestAgent,
)
from tests.qga import BLOCKED, running_qemu_ga


@pytest.fixture
def qga(tmp_path: Path) -> Iterator[Path]:
    with running_qemu_ga(tmp_path / "qga.sock", tmp_path / "state") as sock:
        yield sock


@pytest.fixture
async def agent(qga: Path) -> AsyncIterator[GuestAgent]:
    async with await GuestAgent.connect(qga) as connected:
        yield connected


async def test_ping_and_get_time(agent: GuestAgent) -> None:
    await agent.ping()
    before = time.time_ns()
    now = await agent.get_time()
    after = time.time_ns()
    # The host's agent reads the host's clock.
    assert before - 1_000_000_000 <= now <= after + 1_000_000_000


async def test_fsfreeze_status_reads_thawed(agent: GuestAgent) -> None:
    assert await agent.fsfreeze_status() == "thawed"


async def test_blocked_commands_are_clear_errors(agent: GuestAgent) -> None:
    with pytest.raises(AgentCommandError) as info:
        await agent.set_time(time.time_ns())
    assert "guest-set-time" in str(info.value)
    assert "disabled" in str(info.value).lower()
    # The channel stays usable after an error answer.
    await agent.ping()


async def test_unknown_command_names_the_agents_class(agent: GuestAgent) -> None:
    with pytest.raises(AgentCommandError) as info:
        await agent.execute("guest-no-such-command")
    assert info.value.error_class == "CommandNotFound"


async def test_sync_discards_stale_replies(qga: Path) -> None:
    """A previous client left a request unanswered-and-unread and half a request."""
    reader, writer = await asyncio.open_unix_connection(str(qga))
    writer.write(json.dumps({"execute": "guest-info"}).encode() + b"\n")
    writer.write(b'{"execute": "guest-pi')  # cut off mid-request
    await writer.drain()
    await asyncio.sleep(0.2)  # let the agent queue its answer; correctness does not depend on it
    # Same connection, as the socket of a restored guest would be: the stale guest-info
    # answer is in the stream before anything the new client asks.
    agent = GuestAgent(reader, writer, "test")
    try:
        await agent.ping()
        assert isinstance(await agent.get_time(), int)
    finally:
        await agent.close()


async def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable, match="cannot connect"):
        await GuestAgent.connect(tmp_path / "absent.sock", timeout=2)


async def test_silent_peer_times_out(tmp_path: Path) -> None:
    """A channel nobody answers on (the guest has no agent): a timeout naming the socket."""
    path = tmp_path / "silent.sock"
    peers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_unix_server(lambda r, w: peers.append(w), str(path))
    try:
        with pytest.raises(AgentUnavailable, match="no answer within"):
            await GuestAgent.connect(path, timeout=0.5)
    finally:
        for peer in peers:
            peer.close()
        server.close()
        await server.wait_closed()


async def test_vsock_handshake_then_agent(qga: Path, tmp_path: Path) -> None:
    """Firecracker's hybrid vsock, with a relay in Firecracker's place: CONNECT, OK, then qemu-ga.

    The relay stands in for Firecracker's muxer (not available here); it follows
    the handshake in Firecracker's API description and refuses other ports by
    closing, as Firecracker does.
    """
    seen: list[bytes] = []

    async def muxer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        seen.append(line)
        if line != b"CONNECT 1024\n":
            writer.close()
            await writer.wait_closed()
            return
        up_reader, up_writer = await asyncio.open_unix_connection(str(qga))
        writer.write(b"OK 1073741824\n")

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(
            pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True
        )

    uds = tmp_path / "v.sock"
    server = await asyncio.start_unix_server(muxer, str(uds))
    try:
        async with await GuestAgent.connect_vsock(uds, 1024) as agent:
            await agent.ping()
        assert seen[0] == b"CONNECT 1024\n"
        with pytest.raises(AgentUnavailable, match="vsock connect refused"):
            await GuestAgent.connect_vsock(uds, 52, timeout=5)
    finally:
        server.close()


@pytest.fixture
def qga_exec(tmp_path: Path) -> Iterator[Path]:
    """An agent that may run programs (as this test's user: only harmless ones are run)."""
    blocked = ",".join(c for c in BLOCKED.split(",") if c != "guest-exec")
    with running_qemu_ga(tmp_path / "qga-exec.sock", tmp_path / "state-exec", blocked) as sock:
        yield sock


async def test_run_waits_for_the_program_and_returns_its_output(qga_exec: Path) -> None:
    """guest-exec then guest-exec-status until it exited: code, stdout and stderr apart."""
    async with await GuestAgent.connect(qga_exec) as agent:
        result = await agent.run(
            ["/bin/sh", "-c", 'sleep 0.3; echo "$1"; echo err >&2; exit 3', "sh", "a b"]
        )
    assert (result.exitcode, result.stdout, result.stderr) == (3, b"a b\n", b"err\n")


async def test_run_of_a_missing_program_is_an_agent_error(qga_exec: Path) -> None:
    async with await GuestAgent.connect(qga_exec) as agent:
        with pytest.raises(AgentCommandError):
            await agent.run(["/nonexistent/program"])
        await agent.ping()


async def test_write_file_writes_the_bytes(agent: GuestAgent, tmp_path: Path) -> None:
    target = tmp_path / "written"
    data = bytes(range(256)) * 3
    await agent.write_file(str(target), data)
    assert target.read_bytes() == data


async def test_a_refused_shutdown_is_reported_not_taken_as_done(agent: GuestAgent) -> None:
    """guest-shutdown answers only when it fails: that answer is an error, and heard."""
    with pytest.raises(AgentCommandError, match="guest-shutdown"):
        await agent.shutdown(error_window=10)
    await agent.ping()


async def test_a_silent_shutdown_counts_as_accepted(tmp_path: Path) -> None:
    """No answer (the agent's success) within the window: accepted, no exception."""
    path = tmp_path / "quiet.sock"

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answer the sync as qemu-ga does (sentinel, then the id), then stay silent.
        sync = json.loads((await reader.readline()).lstrip(b"\xff"))
        writer.write(b"\xff" + json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
        await writer.drain()
        heard.append(json.loads(await reader.readline()))
        await reader.read()  # until the client hangs up
        writer.close()

    heard: list[dict[str, object]] = []

    server = await asyncio.start_unix_server(peer, str(path))
    try:
        async with await GuestAgent.connect(path) as agent:
            await agent.shutdown(error_window=0.3)
        assert heard == [{"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}}]
    finally:
        server.close()
        await server.wait_closed()
