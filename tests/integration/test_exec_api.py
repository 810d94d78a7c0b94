"""The exec WebSocket (issue #17 items 2 and 6) end to end against a real sshd on loopback.

The daemon side is the real route and :mod:`banger.daemon.guestexec` on a
:class:`GuestConns` reaching the test's sshd; the client is
:mod:`banger.exec_client` over a Unix socket served by uvicorn. The "guest" is
this machine, so "no process left" is checked in this machine's /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from banger.daemon.api.vms.exec import exec_router
from banger.daemon.guestconn import GuestConns
from banger.errors import BangerError, Conflict, InvalidArgument, NotFound
from banger.exec_client import exec_request, open_exec, run_exec
from banger.guest.ssh import wait_for_ssh
from banger.images.oci.guestenv import GuestEnv
from banger.store import VMRecord, VMState
from tests.sshd import Sshd, needs_sshd, sshd_fixture, vm_record  # noqa: F401 (provides the sshd fixture)
from tests.support import async_wait_until, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_sshd]


class Store:
    def __init__(self, vms: dict[str, VMRecord]) -> None:
        self.vms = vms

    def resolve_vm(self, ref: str) -> VMRecord:
        if ref not in self.vms:
            raise NotFound(f"no VM named {ref!r}")
        return self.vms[ref]


@contextlib.asynccontextmanager
async def daemon(
    sshd: Sshd,
    tmp: Path,
    slots: int = 8,
    conns_per_vm: int = 4,
    image: GuestEnv | None = None,
) -> AsyncIterator[tuple[Path, GuestConns]]:
    await wait_for_ssh(sshd.target, 30)
    t = sshd.target
    conns = GuestConns(
        t.known_hosts,
        t.client_key,
        port=t.port,
        channels_per_conn=slots,
        conns_per_vm=conns_per_vm,
    )
    vm = vm_record()
    stopped = vm_record(VMState.STOPPED)
    stack = SimpleNamespace(
        vms=SimpleNamespace(
            store=Store({"t1": vm, "off": stopped}), _image_defaults=lambda vm: image
        ),
        guest_conns=conns,
    )
    app = FastAPI()
    app.include_router(exec_router(stack), prefix="/v1/vms")  # type: ignore[arg-type]
    (tmp / "run").mkdir(mode=0o700)
    sock = tmp / "run" / "bangerd.sock"
    tmp.chmod(0o700)
    server = uvicorn.Server(uvicorn.Config(app, uds=str(sock), log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    await async_wait_until(sock.exists, 10, "the socket")
    try:
        yield sock, conns
    finally:
        server.should_exit = True
        await task
        await conns.close()


def marked(exec_id: str) -> list[int]:
    """Processes on this machine carrying the exec's mark (the "guest" is this machine)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"BANGER_EXEC_ID={exec_id}".encode() in (entry / "environ").read_bytes().split(
                    b"\0"
                ):
                    found.append(int(entry.name))
    return found


async def test_status_output_stdin_and_signals(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp) as (sock, _):
        r = await run_exec(sock, "t1", exec_request(["sh", "-c", "echo out; echo err >&2; exit 7"]))
        assert (r.exit_code, r.out, r.err, r.signal) == (7, "out\n", "err\n", None)
        # argv arrives intact; env, cwd
        r = await run_exec(
            sock,
            "t1",
            exec_request(
                ["sh", "-c", 'printf "%s|%s|%s" "$1" "$X" "$PWD"', "_", "a 'b' $c"],
                env={"X": "é y"},
                cwd="/tmp",
            ),
        )
        assert r.out == "a 'b' $c|é y|/tmp"
        # stdin round trip (binary, larger than one frame)
        blob = os.urandom(300_000)
        r = await run_exec(sock, "t1", exec_request(["cat"]), stdin=blob)
        assert r.stdout == blob and r.exit_code == 0
        # a shell string is a shell command
        r = await run_exec(sock, "t1", exec_request("echo $((6*7)) | tr 4 x"))
        assert r.out == "x2\n"
        # killed by a signal
        r = await run_exec(sock, "t1", exec_request(["sh", "-c", "kill -TERM $$"]))
        assert (r.exit_code, r.signal, r.status) == (None, "TERM", 143)


async def test_the_images_working_dir_and_user_are_the_defaults(
    sshd: Sshd, short_tmp: Path
) -> None:
    """As docker exec (issue #22 item 6); an explicit cwd or user wins."""
    image = GuestEnv(env=(), skipped=(), working_dir="/var", user="nobody")
    where = ["sh", "-c", 'echo "$PWD|$(id -un)"']
    async with daemon(sshd, short_tmp, image=image) as (sock, _):
        assert (await run_exec(sock, "t1", exec_request(where))).out == "/var|nobody\n"
        r = await run_exec(sock, "t1", exec_request(where, cwd="/tmp", user="root"))
        assert r.out == "/tmp|root\n"
        r = await run_exec(sock, "t1", exec_request(where, cwd="/tmp"))
        assert r.out == "/tmp|nobody\n"


async def test_interleaved_output_without_loss_under_a_slow_reader(
    sshd: Sshd, short_tmp: Path
) -> None:
    script = (
        "i=0; while [ $i -lt 40 ]; do head -c 131072 /dev/zero | tr '\\0' o; "
        "head -c 131072 /dev/zero | tr '\\0' e >&2; i=$((i+1)); done"
    )
    async with daemon(sshd, short_tmp) as (sock, _):
        handle = await open_exec(sock, "t1", exec_request(script))
        async with handle:
            await handle.close_stdin()
            out = hashlib.sha256()
            n_out = n_err = 0
            async for stream, data in handle.events():
                if stream == "stdout":
                    n_out += len(data)
                    out.update(data)
                else:
                    n_err += len(data)
                await asyncio.sleep(0)  # a reader that yields between frames
        assert handle.result is not None and handle.result.exit_code == 0
        assert (n_out, n_err) == (40 * 131072, 40 * 131072)
        assert out.hexdigest() == hashlib.sha256(b"o" * 40 * 131072).hexdigest()


async def test_pty_size_and_resize(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp) as (sock, _):
        r = await run_exec(sock, "t1", exec_request(["stty", "size"], pty=(33, 101)))
        assert r.out.strip() == "33 101"
        handle = await open_exec(sock, "t1", exec_request("read x; stty size", pty=(10, 20)))
        async with handle:
            await handle.resize(50, 132)
            await handle.write(b"go\n")
            result = await handle.wait()
        assert result.out.splitlines()[-1].strip() == "50 132"


async def test_timeout_and_disconnect_kill_the_process_group(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp) as (sock, _):
        # a child in the background and one that left the group: both must die
        script = "sleep 300 & setsid sleep 301 & echo started; wait"
        handle = await open_exec(sock, "t1", exec_request(script, timeout=2))
        async with handle:
            result = await handle.wait()
        assert result.timed_out and result.signal in ("TERM", "KILL")
        await async_wait_until(lambda: not marked(handle.exec_id), 15, "no process left")

        handle = await open_exec(sock, "t1", exec_request(script))
        async for _stream, data in handle.events():
            assert data == b"started\n"
            break
        assert marked(handle.exec_id)
        await handle.close()  # the client leaves mid-command
        await async_wait_until(lambda: not marked(handle.exec_id), 15, "no process left")


async def test_sixteen_concurrent_execs(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp) as (sock, conns):
        results = await asyncio.gather(
            *(
                run_exec(sock, "t1", exec_request(["sh", "-c", f"sleep 0.5; echo {i}"]))
                for i in range(16)
            )
        )
        assert [r.out for r in results] == [f"{i}\n" for i in range(16)]
        # all through the one runner: no sshd session each, so one connection carries them
        assert conns.held("vm-1") == 1
        # terminals take sshd sessions: 16 > 8 channels per connection
        results = await asyncio.gather(
            *(
                run_exec(
                    sock, "t1", exec_request(["sh", "-c", f"sleep 0.5; echo {i}"], pty=(5, 20))
                )
                for i in range(16)
            )
        )
        assert [r.out for r in results] == [f"{i}\r\n" for i in range(16)]
        assert conns.held("vm-1") == 2


async def test_bad_input_and_unknown_or_stopped_vm(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp) as (sock, _):
        with pytest.raises(NotFound, match="no VM named 'nope'"):
            await run_exec(sock, "nope", exec_request(["true"]))
        with pytest.raises(Conflict, match="stopped, not running"):
            await run_exec(sock, "off", exec_request(["true"]))
        with pytest.raises(InvalidArgument, match="exactly one of argv and shell"):
            await run_exec(sock, "t1", {"argv": ["true"], "shell": "true"})
        with pytest.raises(InvalidArgument, match="argv: empty"):
            await run_exec(sock, "t1", {"argv": []})
        with pytest.raises(InvalidArgument, match="pty"):
            await run_exec(sock, "t1", {"argv": ["true"], "pty": {"rows": 0, "cols": 5}})
        bad: dict[str, Any] = {"argv": ["true"], "bogus": 1}
        with pytest.raises(InvalidArgument, match="bogus"):
            await run_exec(sock, "t1", bad)


async def test_connection_dropped_mid_command_then_the_next_call_reconnects(
    sshd: Sshd, short_tmp: Path
) -> None:
    async with daemon(sshd, short_tmp) as (sock, conns):
        handle = await open_exec(sock, "t1", exec_request("echo up; sleep 60"))
        async with handle:
            async for _stream, _data in handle.events():
                break
            vm = vm_record()
            held = await conns.get(vm)
            held.abort()  # what a killed sshd looks like from the daemon
            with pytest.raises(BangerError, match="closed before the command ended"):
                await handle.wait()
        await async_wait_until(lambda: not marked(handle.exec_id), 15, "the orphan killed")
        r = await run_exec(sock, "t1", exec_request(["echo", "again"]))
        assert r.out == "again\n"


async def test_a_runner_killed_under_a_command_is_said_to_be_the_runner(
    sshd: Sshd, short_tmp: Path
) -> None:
    async with daemon(sshd, short_tmp) as (sock, _conns):
        with pytest.raises(BangerError, match="command runner in VM t1 ended") as caught:
            await run_exec(sock, "t1", exec_request("kill -KILL $PPID; sleep 30"))
        assert "last words" in (caught.value.hint or "")
        r = await run_exec(sock, "t1", exec_request(["echo", "again"]))
        assert r.out == "again\n"


def test_framing_is_in_the_openapi_description() -> None:
    app = FastAPI()
    app.include_router(
        exec_router(SimpleNamespace(vms=None, guest_conns=None)),  # type: ignore[arg-type]
        prefix="/v1/vms",
    )
    get = app.openapi()["paths"]["/v1/vms/{ref}/exec"]["get"]
    assert "0x01" in get["description"] and "426" in get["responses"]


BANGER = Path(sys.executable).parent / "banger"
LOOP = "stty size; while read x; do stty size; done"


async def test_cli_exec_status_stdin_and_a_real_pty(sshd: Sshd, short_tmp: Path) -> None:
    env = {
        **os.environ,
        "BANGER_HOME": str(short_tmp),
        "BANGER_RUNTIME_DIR": str(short_tmp / "run"),
    }
    async with daemon(sshd, short_tmp):
        cli = await asyncio.create_subprocess_exec(
            BANGER, "vm", "exec", "-i", "-e", "A=1", "-w", "/tmp", "t1", "--",
            "sh", "-c", 'cat; echo "$A $PWD" >&2; exit 3',
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await cli.communicate(b"through stdin")
        assert (cli.returncode, out, err) == (3, b"through stdin", b"1 /tmp\n")

        # -t through a real pty: raw mode, the size, a resize (SIGWINCH), restored after
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 20, 70, 0, 0))
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen(
            [BANGER, "vm", "exec", "-it", "t1", "--", "sh", "-c", LOOP],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )  # fmt: skip
        seen = b""

        def read_until(text: bytes) -> bool:
            nonlocal seen
            while text not in seen:
                seen += os.read(master, 4096)
            return True

        await asyncio.to_thread(read_until, b"20 70")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def resized() -> bool:  # each Enter prints the size the guest sees, until it is new
            nonlocal seen
            for _ in range(300):
                os.write(master, b"\r")
                seen += os.read(master, 4096)
                if b"40 120" in seen:
                    return True
            return False

        assert await asyncio.to_thread(resized)
        os.write(master, b"\x04")  # EOF ends the loop
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert termios.tcgetattr(slave) == before  # the terminal restored
        os.close(master)
        os.close(slave)


async def test_invalid_frames_are_refused_by_field(sshd: Sshd, short_tmp: Path) -> None:
    from websockets.asyncio.client import unix_connect

    async with daemon(sshd, short_tmp) as (sock, _):
        uri = "ws://bangerd/v1/vms/t1/exec"
        async with unix_connect(str(sock), uri) as ws:
            await ws.send("not json")
            reply = json.loads(await ws.recv())
            assert (reply["type"], reply["kind"]) == ("error", "InvalidArgument")
            assert reply["error"].startswith("frame: ")
        async with unix_connect(str(sock), uri) as ws:
            await ws.send(json.dumps({"shell": "echo up; sleep 60"}))
            started = json.loads(await ws.recv())
            assert started["type"] == "started"
            assert await ws.recv() == b"\x01up\n"
            await ws.send(b"\x07stdin on the wrong stream")
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and "0x00" in reply["error"]
        # the command of the refused stream was killed, not left running
        await async_wait_until(lambda: not marked(started["exec_id"]), 15, "no process left")
        async with unix_connect(str(sock), uri) as ws:
            await ws.send(json.dumps({"argv": ["true"]}))
            assert json.loads(await ws.recv())["type"] == "started"
            await ws.send(json.dumps({"type": "signal", "signal": "NOPE"}))
            reply = json.loads(await ws.recv())
            assert reply["type"] in ("error", "exit")  # `true` may have ended first


async def test_a_kill_gets_through_when_every_slot_is_busy(sshd: Sshd, short_tmp: Path) -> None:
    async with daemon(sshd, short_tmp, slots=1, conns_per_vm=1) as (sock, _):
        handle = await open_exec(sock, "t1", exec_request("echo up; sleep 60"))
        async for _stream, data in handle.events():
            assert data == b"up\n"
            break
        assert marked(handle.exec_id)
        await handle.close()  # the only slot is the running command's own
        await async_wait_until(lambda: not marked(handle.exec_id), 15, "no process left")


async def test_a_session_refused_by_max_sessions_is_retried(sshd: Sshd, short_tmp: Path) -> None:
    # sshd frees a closed session a beat late, so a slot taken again at once can meet
    # "open failed" (MaxSessions; seen with 16 concurrent execs under load). Here the
    # limit is 1 and a command holds it: the second is retried until it gets through.
    # Terminals, because they take sshd sessions (the runner would carry both).
    sshd.stop()
    with open(sshd.dir / "sshd_config", "a") as config:
        config.write("MaxSessions 1\n")
    sshd.start()
    async with daemon(sshd, short_tmp, slots=2, conns_per_vm=1) as (sock, _):
        first = await open_exec(sock, "t1", exec_request("echo up; sleep 1", pty=(5, 20)))
        async for _stream, data in first.events():
            assert data == b"up\r\n"
            break
        second = await run_exec(sock, "t1", exec_request(["echo", "second"], pty=(5, 20)))
        assert (second.exit_code, second.out) == (0, "second\r\n")
        assert (await first.wait()).exit_code == 0
        await first.close()
