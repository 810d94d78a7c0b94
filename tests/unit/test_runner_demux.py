"""The daemon side of the command runner without a guest (issue #17 item 8): framing, demux
of frames to execs, output acks after hand-over, the stdin window, a lost channel."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from banger.daemon.runner import (
    EXECS_PER_RUNNER,
    MAX_FRAME,
    MAX_HELD,
    STDIN_WINDOW,
    RunnerChannel,
    RunnerProtocolError,
    frame,
    runner_command,
)
from banger.guest import runner_guest as proto


class Sink:
    """Where the channel's frames go: parsed back for the test."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def frames(self) -> list[tuple[int, int, bytes]]:
        out, buf = [], self.data
        while buf:
            length, kind, number = proto.HEADER.unpack_from(buf)
            end = proto.HEADER.size + length
            out.append((kind, number, buf[proto.HEADER.size : end]))
            buf = buf[end:]
        self.data = b""
        return out


class Process:
    def __init__(self) -> None:
        self.stdin = Sink()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def channel() -> tuple[RunnerChannel, Sink]:
    process: Any = Process()
    return RunnerChannel("t1", conn=None, process=process), process.stdin  # type: ignore[arg-type]


def test_frame_header_round_trip_and_the_start_command() -> None:
    data = frame(proto.STDOUT, 7, b"abc")
    assert proto.HEADER.unpack_from(data) == (3, proto.STDOUT, 7) and data[9:] == b"abc"
    command = runner_command()
    assert command.startswith("exec python3 -I -S -c '") and "HEADER = struct.Struct" in command


async def test_frames_go_to_their_exec_and_acks_follow_the_hand_over() -> None:
    ch, sink = channel()
    a = await ch.open(["a"], mark="a" * 32)
    b = await ch.open(["b"], mark="b" * 32, env={"K": "V"}, cwd="/w")
    starts = sink.frames()
    assert [(k, n) for k, n, _ in starts] == [(proto.START, 1), (proto.START, 2)]
    assert json.loads(starts[1][2]) == {"argv": ["b"], "env": {"K": "V"}, "cwd": "/w",
                                        "mark": "b" * 32}  # fmt: skip
    ch._dispatch(proto.STDOUT, 2, b"to b")
    ch._dispatch(proto.STDERR, 1, b"to a")
    assert await b.read(proto.STDOUT) == b"to b"
    assert sink.frames() == []  # not acked until the reader comes back for more
    ch._dispatch(proto.STDOUT, 2, b"")  # b's stdout ended
    assert await b.read(proto.STDOUT) == b""
    assert sink.frames() == [(proto.ACK, 2, struct.pack(">I", 4))]
    assert await a.read(proto.STDERR) == b"to a"
    ch._dispatch(proto.EXIT, 1, json.dumps({"exit_code": None, "signal": "TERM"}).encode())
    await a.wait()
    assert (a.exit_code, a.signal, a.lost) == (None, "TERM", False)
    assert await a.read(proto.STDOUT) == b"" and 1 not in ch.execs
    ch._dispatch(proto.STDOUT, 1, b"late")  # an ended exec's frame is dropped
    assert not b.ended.is_set()


async def test_stdin_is_sent_within_the_window_and_eof_after_it() -> None:
    ch, sink = channel()
    rx = await ch.open(["cat"], mark="c" * 32)
    sink.frames()
    rx.write(b"x" * (STDIN_WINDOW + 1000))
    rx.write_eof()
    sent = sink.frames()
    assert sum(len(p) for k, _, p in sent if k == proto.STDIN) == STDIN_WINDOW
    assert all(k == proto.STDIN for k, _, _ in sent)  # no EOF before the rest
    assert rx.buffered() == 1000
    ch._dispatch(proto.STDIN_ACK, 1, struct.pack(">I", 5000))
    rest = sink.frames()
    assert [(k, len(p)) for k, _, p in rest] == [(proto.STDIN, 1000), (proto.EOF, 0)]
    assert rx.buffered() == 0


async def test_a_lost_channel_ends_every_exec_as_lost() -> None:
    ch, _ = channel()
    a = await ch.open(["a"], mark="a" * 32)
    b = await ch.open(["b"], mark="b" * 32)
    ch._lost()
    assert a.lost and b.lost and not ch.alive and ch.execs == {}
    assert await a.read(proto.STDOUT) == b"" and await b.read(proto.STDERR) == b""
    assert not a.send_signal("TERM")
    assert ch.slots._value == EXECS_PER_RUNNER  # every slot given back


async def test_output_past_the_credit_is_a_protocol_error() -> None:
    # The runner stops at WINDOW unacknowledged bytes (one chunk past it at most); a
    # guest that ignores that would make bangerd queue without bound.
    ch, _sink = channel()
    rx = await ch.open(["yes"], mark="c" * 32)
    sent = 0
    while sent + proto.CHUNK <= MAX_HELD:
        ch._dispatch(proto.STDOUT, rx.number, b"y" * proto.CHUNK)
        sent += proto.CHUNK
    assert await rx.read(proto.STDOUT) == b"y" * proto.CHUNK
    # Reading again acknowledges the chunk handed on: room for one more.
    reader = asyncio.create_task(rx.read(proto.STDOUT))
    assert await reader == b"y" * proto.CHUNK
    ch._dispatch(proto.STDOUT, rx.number, b"y" * proto.CHUNK)
    with pytest.raises(RunnerProtocolError, match="unacknowledged"):
        ch._dispatch(proto.STDOUT, rx.number, b"y" * (MAX_HELD - rx.held + 1))


async def test_an_oversized_frame_drops_the_runner_and_fails_its_execs() -> None:
    process: Any = Process()
    process.stdout = asyncio.StreamReader()
    ch = RunnerChannel("t1", conn=None, process=process)  # type: ignore[arg-type]
    rx = await ch.open(["true"], mark="d" * 32)
    process.stdout.feed_data(proto.HEADER.pack(MAX_FRAME + 1, proto.STDOUT, rx.number))
    await asyncio.wait_for(ch._read(), 5)  # returns at once: nothing more is read
    await rx.wait()
    assert rx.lost and not ch.alive and process.closed
