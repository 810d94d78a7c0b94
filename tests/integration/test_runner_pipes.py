"""The guest's command runner program itself, under this machine's python3, spoken to over
pipes frame by frame (issue #17 item 8): credit stops its reads, one stalled exec does not
stall another, stdin is acked as the command takes it, and closing its channel kills what
it started."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from banger.daemon.runner import PYTHON, frame, runner_source
from banger.guest import runner_guest as proto
from tests.support import alive, async_wait_until


class Peer:
    """The daemon's end, by hand: frames out, frames in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    def send(self, kind: int, number: int, payload: bytes = b"") -> None:
        self.stdin.write(frame(kind, number, payload))

    def start(self, number: int, argv: list[str], mark: str = "m" * 32) -> None:
        request: dict[str, object] = {"argv": argv, "env": {}, "cwd": None, "mark": mark}
        self.send(proto.START, number, json.dumps(request).encode())

    async def next(self, timeout: float = 15) -> tuple[int, int, bytes]:
        async with asyncio.timeout(timeout):
            header = await self.stdout.readexactly(proto.HEADER.size)
            length, kind, number = proto.HEADER.unpack(header)
            return kind, number, await self.stdout.readexactly(length)


@asynccontextmanager
async def runner() -> AsyncIterator[Peer]:
    python = Path(sys.executable)  # the guest's python3 stands in for this one
    proc = await asyncio.create_subprocess_exec(
        python, *PYTHON[1:], runner_source(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    peer = Peer(proc)
    try:
        kind, _, payload = await peer.next(30)
        assert kind == proto.HELLO and json.loads(payload)["version"] == proto.VERSION
        yield peer
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_output_stops_at_the_window_and_a_stalled_exec_does_not_stall_another() -> None:
    async with runner() as peer:
        big = 4 * proto.WINDOW
        peer.start(1, ["head", "-c", str(big), "/dev/zero"])
        got = 0
        while got < proto.WINDOW:  # no acks: the runner stops after one window (plus one read)
            kind, _, payload = await peer.next()
            got += len(payload) if kind == proto.STDOUT else 0
        # then nothing more for 1.5 s (a loaded machine can only hide a runner that goes on,
        # never fail one that stopped)
        while True:
            try:
                kind, _, payload = await peer.next(timeout=1.5)
            except TimeoutError:
                break
            got += len(payload) if kind == proto.STDOUT else 0
        assert proto.WINDOW <= got <= proto.WINDOW + proto.CHUNK
        # exec 1 is stalled; exec 2 runs to its end meanwhile
        peer.start(2, ["sh", "-c", "echo two; exit 3"])
        frames: list[tuple[int, bytes]] = []
        while not frames or frames[-1][0] != proto.EXIT:
            frames.append((await peer.next())[0:3:2])
        assert (proto.STDOUT, b"two\n") in frames
        assert json.loads(frames[-1][1]) == {"exit_code": 3, "signal": None}
        # acks let exec 1 finish, every byte delivered
        peer.send(proto.ACK, 1, struct.pack(">I", got))
        exit_frame = None
        while exit_frame is None:
            kind, number, payload = await peer.next()
            assert number == 1
            if kind == proto.STDOUT and payload:
                got += len(payload)
                peer.send(proto.ACK, 1, struct.pack(">I", len(payload)))
            elif kind == proto.EXIT:
                exit_frame = json.loads(payload)
        assert got == big and exit_frame == {"exit_code": 0, "signal": None}


async def test_a_stream_ending_while_the_window_closes_in_the_same_wakeup(tmp_path: Path) -> None:
    # The CI failure of stop 28: stdout's read filled the window and stopped watching both
    # streams, then stderr's end, reported by the same select(), was read and unwatched a
    # second time: the runner died with KeyError and took every exec with it. Here stderr
    # ends while the window is closed, so both are ready together when one byte of credit
    # returns (stdout first: it was registered first).
    flag = tmp_path / "stderr-closed"
    async with runner() as peer:
        big = 4 * proto.WINDOW
        script = f"head -c {big} /dev/zero 2>/dev/null & read go; exec 2>&-; touch {flag}; wait"
        peer.start(1, ["sh", "-c", script])
        got = 0
        stderr_ends: list[bytes] = []  # the empty STDERR frame that says the stream ended

        def count(kind: int, payload: bytes) -> None:
            nonlocal got
            got += len(payload) if kind == proto.STDOUT else 0
            if kind == proto.STDERR and not payload:
                stderr_ends.append(payload)

        while got < proto.WINDOW:  # no acks: the window closes
            kind, _, payload = await peer.next()
            count(kind, payload)
        peer.send(proto.STDIN, 1, b"go\n")
        await async_wait_until(flag.exists, 15, "the command closed its stderr")
        assert stderr_ends == []
        # room for one more read, no more (the last read may have passed the window)
        peer.send(proto.ACK, 1, struct.pack(">I", got - proto.WINDOW + 1))
        kind = -1
        while kind != proto.STDOUT:
            kind, _, payload = await peer.next()
            count(kind, payload)
        try:
            while kind != proto.EXIT:  # acks let it finish: every byte, both ends, the exit
                peer.send(proto.ACK, 1, struct.pack(">I", proto.WINDOW))
                kind, _, payload = await peer.next()
                count(kind, payload)
        except asyncio.IncompleteReadError:
            raise AssertionError("the runner died on that wake-up") from None
        assert got == big and stderr_ends == [b""]
        assert json.loads(payload) == {"exit_code": 0, "signal": None}


async def test_stdin_is_acked_as_the_command_takes_it_then_eof() -> None:
    async with runner() as peer:
        peer.start(1, ["sh", "-c", "wc -c"])
        data = os.urandom(200_000)
        peer.send(proto.STDIN, 1, data)
        peer.send(proto.EOF, 1)
        acked, out = 0, b""
        while True:
            kind, _, payload = await peer.next()
            if kind == proto.STDIN_ACK:
                acked += struct.unpack(">I", payload)[0]
            elif kind == proto.STDOUT:
                out += payload
            elif kind == proto.EXIT:
                break
        assert acked == len(data) and out.strip() == b"200000"


async def test_a_signal_reaches_the_group_and_marked_processes_that_left_it() -> None:
    async with runner() as peer:
        script = "setsid sleep 301 & echo $!; exec sleep 300"
        peer.start(1, ["sh", "-c", script], mark="s" * 32)
        kind, _, payload = await peer.next()
        assert kind == proto.STARTED
        pid = json.loads(payload)["pid"]
        kind, _, payload = await peer.next()
        escaped = int(payload)
        peer.send(proto.SIGNAL, 1, b"TERM")
        while kind != proto.EXIT:
            kind, _, payload = await peer.next()
        assert json.loads(payload) == {"exit_code": None, "signal": "TERM"}
        await async_wait_until(lambda: not alive(escaped), 10, "the escaped sleep killed")
        assert not alive(pid)


async def test_closing_the_channel_kills_every_command() -> None:
    async with runner() as peer:
        peer.start(1, ["sh", "-c", "echo $$; exec sleep 300"])
        peer.start(2, ["sh", "-c", "echo $$; exec sleep 300"])
        pids: list[int] = []
        while len(pids) < 2:
            kind, _, payload = await peer.next()
            if kind == proto.STDOUT and payload:
                pids.append(int(payload))
        peer.stdin.close()  # what sshd's end of a dead connection looks like
        assert await asyncio.wait_for(peer.proc.wait(), 15) == 0
        await async_wait_until(lambda: not any(map(alive, pids)), 10, "every command killed")


async def test_a_missing_program_and_a_bad_cwd_exit_as_a_shell_would() -> None:
    async with runner() as peer:
        peer.start(1, ["no-such-program-y"])
        request = {"argv": ["true"], "env": {}, "cwd": "/no/such", "mark": "c" * 32}
        peer.send(proto.START, 2, json.dumps(request).encode())
        ends: dict[int, dict[str, object]] = {}
        err: dict[int, bytes] = {1: b"", 2: b""}
        while len(ends) < 2:
            kind, number, payload = await peer.next()
            if kind == proto.STDERR:
                err[number] += payload
            elif kind == proto.EXIT:
                ends[number] = json.loads(payload)
        assert ends[1]["exit_code"] == 127 and b"no-such-program-y" in err[1]
        assert ends[2]["exit_code"] == 1 and b"/no/such" in err[2]
