"""Firecracker's hybrid vsock handshake on the host side (banger.guest.agent).

The host connects to the VM's vsock Unix socket, sends ``CONNECT <port>\\n`` and
reads ``OK <hostport>\\n``; after that the stream is the guest's listener. The
answer comes from a process banger does not trust to be well-behaved (a
Firecracker, or whatever owns that socket), so it is read with a bound and
checked: a garbled, overlong, cut-short or missing answer is one
:class:`AgentUnavailable`, never a hang and never a swallowed agent byte.

The peers here are plain asyncio Unix servers in the test (what Firecracker's
muxer would answer); the agent side over a real ``qemu-ga`` is in
tests/integration/test_guest_agent.py and test_agent_vsock_firecracker_standin.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from banger.guest.agent import (
    HANDSHAKE_LIMIT,
    VSOCK_PORT,
    AgentEndpoint,
    AgentUnavailable,
    GuestAgent,
    parse_connect_reply,
    read_connect_reply,
)
from tests.support import short_tmpdir

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_ok_gives_the_host_port() -> None:
    assert parse_connect_reply(b"OK 1073741824\n") == 1073741824
    assert parse_connect_reply(b"OK 0\n") == 0
    assert parse_connect_reply(b"OK 4294967295\n") == 4294967295
    assert len(b"OK 4294967295\n") == HANDSHAKE_LIMIT


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (b"", "connection closed: nothing listens"),
        (b"OK 12", "connection closed mid-answer"),
        (b"OK 1234567890123", "no newline in the first 14 bytes"),
        (b"HTTP/1.1 400 Ba", "no newline in the first 14 bytes"),
        (b"OK 4294967296\n", "not OK <port>"),  # beyond u32
        (b"OK\n", "not OK <port>"),
        (b"OK 12 junk\n", "not OK <port>"),
        (b"OK -1\n", "not OK <port>"),
        (b"ok 12\n", "not OK <port>"),
        (b"OK 12\r\n", "not OK <port>"),
        (b"\xffOK 1\n", "not OK <port>"),
        (b"NO 1024\n", "not OK <port>"),
    ],
)
def test_anything_but_ok_is_one_clear_error(reply: bytes, why: str) -> None:
    with pytest.raises(AgentUnavailable, match="vsock connect refused") as caught:
        parse_connect_reply(reply, "vm x")
    assert why in caught.value.message and caught.value.message.startswith("vm x: ")


async def test_the_reply_reader_stops_at_the_newline_and_leaves_the_stream() -> None:
    """The agent's bytes right behind ``OK`` stay in the reader for the JSON protocol."""
    reader = asyncio.StreamReader()
    reader.feed_data(b'OK 7\n\xff{"return": 1}\n')
    reader.feed_eof()
    assert await read_connect_reply(reader) == b"OK 7\n"
    assert await reader.read() == b'\xff{"return": 1}\n'


async def test_the_reply_reader_is_bounded_without_a_newline() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"A" * 1000)
    assert await read_connect_reply(reader) == b"A" * HANDSHAKE_LIMIT


async def run_against(handler: Handler, timeout: float = 5.0) -> tuple[AgentUnavailable, float]:
    peers: list[asyncio.StreamWriter] = []
    tasks: list[asyncio.Task[None]] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        await handler(reader, writer)

    with short_tmpdir("bgv-") as d:
        server = await asyncio.start_unix_server(tracked, str(d / "v.sock"))
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(AgentUnavailable) as caught:
                await AgentEndpoint(d / "v.sock", VSOCK_PORT).connect(timeout=timeout)
            return caught.value, loop.time() - started
        finally:
            server.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for peer in peers:
                peer.close()
            await server.wait_closed()


async def test_a_peer_that_closes_is_refused_at_once() -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    error, took = await run_against(close)
    assert "connection closed: nothing listens" in error.message and took < 4


async def test_a_garbled_endless_answer_is_refused_without_reading_it_all() -> None:
    """A peer streaming bytes with no newline: refused after 14 bytes, not at the timeout."""

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        try:
            while True:
                writer.write(b"x" * 65536)
                await writer.drain()
        except (ConnectionError, OSError):
            pass

    error, took = await run_against(flood, timeout=20)
    assert "no newline in the first 14 bytes" in error.message and took < 10


async def test_ok_with_junk_is_refused() -> None:
    async def junk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"OK 10 junk\n")
        await writer.drain()
        await reader.read()

    error, _ = await run_against(junk)
    assert "not OK <port>" in error.message


async def test_a_silent_peer_times_out_naming_the_port() -> None:
    """A guest that never accepts (Firecracker keeps the connection pending): the timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    error, _ = await run_against(silent, timeout=0.5)
    assert f"vsock port {VSOCK_PORT}" in error.message and "no answer within 0.5s" in error.message


async def test_the_connect_line_is_what_firecracker_expects() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        writer.close()

    await run_against(record)
    assert seen == [f"CONNECT {VSOCK_PORT}\n".encode()]


async def test_a_missing_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable, match="cannot connect to guest agent on vsock port"):
        await AgentEndpoint(tmp_path / "absent.sock", VSOCK_PORT).connect(timeout=2)


async def test_a_port_outside_u32_is_a_caller_bug(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="port"):
        await GuestAgent.connect_vsock(tmp_path / "x.sock", 2**32)
