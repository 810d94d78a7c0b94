"""Sessions against real tmux, script and sh on this host, reached through a real sshd on loopback.

The guest runs the same tools (Debian's tmux, util-linux script, coreutils,
dash); only the state directory and the tmux socket are moved into a temp dir
through :class:`GuestLayout`, so nothing here touches ``/run`` or ``/root``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from banger.errors import Conflict, InvalidArgument, NotFound
from banger.guest import sessions
from banger.guest.session_scripts import GuestLayout
from banger.guest.sessions import LogChunk, SessionEnded, SessionStatus
from banger.guest.ssh import open_connection, ssh_argv, wait_for_ssh
from tests.hostile import HOSTILE
from tests.sshd import (
    Sshd,
    needs_sshd,
    sshd_fixture,  # noqa: F401 (provides the sshd fixture)
)
from tests.support import needs_root, wait_until
from tests.terminal import Terminal

pytestmark = [
    pytest.mark.root,
    needs_root,
    needs_sshd,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def layout(short_tmp: Path) -> Iterator[GuestLayout]:
    layout = GuestLayout(root=f"{short_tmp}/sessions", socket=f"{short_tmp}/tmux.sock")
    try:
        yield layout
    finally:
        # commands of sessions whose tmux server was killed under them run on
        # as orphans: end their process groups, then the server
        for pid_file in Path(layout.root).glob("*/pid"):
            if not (pid_file.parent / "exit").exists():
                with contextlib.suppress(OSError, ValueError):
                    os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        subprocess.run(
            ["tmux", "-S", layout.socket, "kill-server"], capture_output=True, check=False
        )


@pytest.fixture
async def conn(sshd: Sshd) -> AsyncIterator[asyncssh.SSHClientConnection]:
    await wait_for_ssh(sshd.target, timeout=30)
    async with open_connection(sshd.target) as connection:
        yield connection


def text(data: bytes) -> str:
    """Terminal output as plain lines (the pty turns \\n into \\r\\n)."""
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


async def collect(
    conn: asyncssh.SSHClientConnection, name: str, layout: GuestLayout, offset: int = 0
) -> tuple[list[LogChunk], SessionEnded]:
    chunks: list[LogChunk] = []
    async with asyncio.timeout(60):
        async for event in sessions.follow(conn, name, offset=offset, layout=layout):
            if isinstance(event, LogChunk):
                chunks.append(event)
            else:
                return chunks, event
    raise AssertionError("follow ended without SessionEnded")


async def test_follow_streams_every_line_in_order_then_the_exit_status(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout, short_tmp: Path
) -> None:
    # lines 4-6 wait until the test has seen line 3 through the follow: proof
    # that output streams while the session runs, however loaded the machine
    go = short_tmp / "go"
    script = (
        'for i in 1 2 3; do echo "line $i"; sleep 0.2; done;'
        f" while [ ! -e {go} ]; do sleep 0.1; done;"
        ' for i in 4 5 6; do echo "line $i"; sleep 0.2; done; exit 3'
    )
    info = await sessions.start(conn, ["sh", "-c", script], name="count", layout=layout)
    assert (info.name, info.state, info.exit_status) == ("count", SessionStatus.RUNNING, None)
    assert info.command == ("sh", "-c", script)
    chunks: list[LogChunk] = []
    ended: SessionEnded | None = None
    async with asyncio.timeout(60):
        async for event in sessions.follow(conn, "count", layout=layout):
            if isinstance(event, LogChunk):
                chunks.append(event)
                if b"line 3" in b"".join(c.data for c in chunks):
                    go.touch()
            else:
                ended = event
    assert ended is not None, "follow ended without SessionEnded"
    offsets = [c.offset for c in chunks]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(b.offset == a.offset + len(a.data) for a, b in itertools.pairwise(chunks))
    assert text(b"".join(c.data for c in chunks)) == "".join(f"line {i}\n" for i in range(1, 7))
    assert ended.info.state is SessionStatus.EXITED and ended.info.exit_status == 3

    listed = await sessions.list_sessions(conn, layout)
    assert [(s.name, s.state, s.exit_status) for s in listed] == [
        ("count", SessionStatus.EXITED, 3)
    ]
    assert listed[0].started_at is not None and listed[0].ended_at is not None
    assert listed[0].started_at <= listed[0].ended_at

    # a follow of a finished session is the log from the offset, then the end
    rest, again = await collect(conn, "count", layout, offset=len(b"line 1\r\n"))
    assert text(b"".join(c.data for c in rest)).startswith("line 2\n")
    assert again.info.exit_status == 3
    assert text(await sessions.logs(conn, "count", tail=2, layout=layout)) == "line 5\nline 6\n"


async def test_hostile_argv_env_and_cwd_arrive_unchanged(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout, short_tmp: Path
) -> None:
    cwd = short_tmp / "dir with 'quote' $x ✓"
    cwd.mkdir()
    out = short_tmp / "argv.out"
    writer = (
        'for a in "$@"; do printf "%s\\0" "$a"; done > "$OUT";'
        ' printf "%s\\0%s" "$PWD" "$V" >> "$OUT"'
    )
    env = {"OUT": str(out), "V": "`x` $HOME 'q'\nnext ✓"}
    await sessions.start(
        conn,
        ["sh", "-c", writer, "sh", *HOSTILE],
        name="hostile",
        cwd=str(cwd),
        env=env,
        layout=layout,
    )
    _, ended = await collect(conn, "hostile", layout)
    assert ended.info.exit_status == 0
    *args, pwd, value = out.read_bytes().decode().split("\0")
    assert args == HOSTILE
    assert (pwd, value) == (str(cwd), env["V"])
    assert (await sessions.get(conn, "hostile", layout)).command == (
        "sh",
        "-c",
        writer,
        "sh",
        *HOSTILE,
    )


async def test_missing_cwd_and_missing_program_are_exit_statuses(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout
) -> None:
    await sessions.start(conn, ["true"], name="nocwd", cwd="/nonexistent", layout=layout)
    chunks, ended = await collect(conn, "nocwd", layout)
    assert ended.info.exit_status == 126
    assert "cannot cd to /nonexistent" in text(b"".join(c.data for c in chunks))
    await sessions.start(conn, ["no-such-program-xyz"], name="noprog", layout=layout)
    _, ended = await collect(conn, "noprog", layout)
    assert ended.info.exit_status == 127


async def test_names_are_validated_unique_and_generated(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout
) -> None:
    await sessions.start(conn, ["sleep", "30"], name="a.b", layout=layout)
    with pytest.raises(Conflict, match=r"already has a session named 'a\.b'"):
        await sessions.start(conn, ["true"], name="a.b", layout=layout)
    with pytest.raises(InvalidArgument, match="name: not a valid session name"):
        await sessions.start(conn, ["true"], name="Bad Name", layout=layout)
    generated = await sessions.start(conn, ["/usr/bin/sleep", "30"], layout=layout)
    assert generated.name.startswith("sleep-")
    names = {s.name: s.state for s in await sessions.list_sessions(conn, layout)}
    assert names == {"a.b": SessionStatus.RUNNING, generated.name: SessionStatus.RUNNING}
    with pytest.raises(NotFound):
        await sessions.logs(conn, "nope", layout=layout)
    with pytest.raises(NotFound):
        await sessions.stop(conn, "nope", layout=layout)
    with pytest.raises(NotFound):
        await sessions.get(conn, "nope", layout)
    with pytest.raises(Conflict, match="still running"):
        await sessions.forget(conn, "a.b", layout)
    stopped = await sessions.stop(conn, "a.b", timeout=30, layout=layout)
    assert (stopped.outcome, stopped.info.exit_status) == ("signalled", 128 + 15)
    await sessions.forget(conn, "a.b", layout)
    await sessions.start(conn, ["true"], name="a.b", layout=layout)  # the name is free again


async def test_send_types_into_a_reading_program(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout
) -> None:
    program = 'IFS= read -r line; printf "got:[%s]\\n" "$line"'
    await sessions.start(conn, ["sh", "-c", program], name="reader", layout=layout)
    typed = "hello $USER 'q' `x` ✓"
    await sessions.send(conn, "reader", typed, layout=layout)
    await sessions.send(conn, "reader", "", enter=True, layout=layout)
    chunks, ended = await collect(conn, "reader", layout)
    assert ended.info.exit_status == 0
    assert f"got:[{typed}]\n" in text(b"".join(c.data for c in chunks))
    with pytest.raises(Conflict, match="is not running"):
        await sessions.send(conn, "reader", "late", layout=layout)


async def test_stop_term_handled_and_term_ignored(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout
) -> None:
    handles = 'trap "echo bye; exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    ignores = 'trap "" TERM; echo ready; while :; do sleep 0.1; done'
    await sessions.start(conn, ["sh", "-c", handles], name="polite", layout=layout)
    await sessions.start(conn, ["sh", "-c", ignores], name="stubborn", layout=layout)
    # "signalled", not "killed", is what shows TERM was handled within the timeout.
    polite = await sessions.stop(conn, "polite", timeout=120, layout=layout)
    assert (polite.outcome, polite.info.state, polite.info.exit_status) == (
        "signalled",
        SessionStatus.EXITED,
        7,
    )
    assert "bye" in text(await sessions.logs(conn, "polite", layout=layout))

    began = time.monotonic()
    stubborn = await sessions.stop(conn, "stubborn", signal="SIGTERM", timeout=1.5, layout=layout)
    assert time.monotonic() - began >= 1.5  # the grace period is the behaviour: a lower bound
    assert (stubborn.outcome, stubborn.info.exit_status) == ("killed", 128 + 9)
    again = await sessions.stop(conn, "stubborn", layout=layout)
    assert again.outcome == "exited"


def group_members(pgid: int) -> list[str]:
    """Live processes (zombies aside) in process group ``pgid`` on this host: "pid comm"."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text_ = stat.read_text()
        except OSError:
            continue  # it ended while we looked
        comm = text_[text_.index("(") + 1 : text_.rindex(")")]
        state, _ppid, pgrp = text_.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{stat.parent.name} {comm}")
    return found


@pytest.mark.parametrize(
    ("leader", "timeout", "outcome"),
    [
        # The command ends on TERM; a child that ignores TERM (and the terminal's
        # hangup) gets the same grace, then KILL: it must not outlive the stop.
        ('trap "exit 7" TERM', 20.0, "signalled"),
        # Nobody ends on TERM: after the grace period the whole group gets KILL.
        ('trap "" TERM', 0.5, "killed"),
    ],
    ids=["leader-obeys", "nobody-obeys"],
)
async def test_stop_leaves_no_process_of_the_sessions_group(
    conn: asyncssh.SSHClientConnection,
    layout: GuestLayout,
    leader: str,
    timeout: float,
    outcome: str,
) -> None:
    """README: `session stop` "signals its process group, waits, then kills"."""
    script = (
        f"{leader};"
        # a child that ignores TERM and HUP (as nohup does) and keeps nothing of the
        # terminal, so it does not hold the session open; and one that holds it
        ' (trap "" TERM HUP; exec sleep 1000) </dev/null >/dev/null 2>&1 &'
        " sleep 1000 &"
        " echo ready; while :; do sleep 0.1; done"
    )
    await sessions.start(conn, ["sh", "-c", script], name="family", layout=layout)
    pgid = int((Path(layout.dir("family")) / "pid").read_text())
    wait_until(lambda: len(group_members(pgid)) >= 3, 60, "the session's processes started")
    stopped = await sessions.stop(conn, "family", timeout=timeout, layout=layout)
    assert stopped.outcome == outcome
    assert stopped.info.state is SessionStatus.EXITED
    # KILL is delivered asynchronously; the wait is a hang bound, not a speed claim.
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not group_members(pgid), 60, "the session's group empty")
    assert group_members(pgid) == [], "session stop left processes of its group running"


async def test_killed_tmux_server_leaves_lost_sessions_and_reconcile_says_so(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout
) -> None:
    await sessions.start(conn, ["sleep", "60"], name="doomed", layout=layout)
    await sessions.start(conn, ["true"], name="quick", layout=layout)
    await collect(conn, "quick", layout)
    subprocess.run(["tmux", "-S", layout.socket, "kill-server"], check=True)
    listing = await sessions.listing(conn, layout)
    states = {s.name: (s.state, s.exit_status) for s in listing.sessions}
    assert states["doomed"] == (SessionStatus.LOST, None)
    assert states["quick"] == (SessionStatus.EXITED, 0)
    with pytest.raises(Conflict, match="not running"):
        await sessions.stop(conn, "doomed", layout=layout)


def _attach_through_a_pty(argv: list[str], home: Path) -> tuple[int, bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "TERM": "xterm-256color"}
    term = Terminal(argv, env, rows=30, cols=100)
    try:
        term.expect(b"ready")
        term.type(b"size\r")
        term.expect(b"size:29 100")  # tmux keeps a row for its status line
        term.resize(40, 120)
        # The new size reaches the session when tmux has handled SIGWINCH: ask
        # again until it answers with it, instead of sleeping and hoping.
        wait_until(lambda: term.answers(b"size\r", b"size:39 120"), 60, "the session sees 40x120")
        term.type(b"ping \xe2\x9c\x93\r")
        term.expect("echo:ping ✓".encode())
        # C-b d, tmux's detach, typed at human speed: keys arriving together
        # are a paste to tmux (assume-paste-time), and pastes bind no keys
        time.sleep(0.3)
        term.type(b"\x02")
        time.sleep(0.3)
        term.type(b"d")
        term.expect(b"[detached")
        status = term.proc.wait(timeout=20)
        return status, term.seen
    finally:
        term.close()


async def test_attach_through_a_real_pty_then_detach_leaves_it_running(
    conn: asyncssh.SSHClientConnection, layout: GuestLayout, sshd: Sshd, short_tmp: Path
) -> None:
    program = (
        "echo ready; while IFS= read -r l; do "
        'if [ "$l" = size ]; then echo "size:$(stty size)"; else echo "echo:$l"; fi; done'
    )
    await sessions.start(conn, ["sh", "-c", program], name="shell", layout=layout)
    argv = sessions.attach_argv(ssh_argv(sshd.target, tty=True), "shell", layout)
    status, _ = await asyncio.to_thread(_attach_through_a_pty, argv, short_tmp)
    assert status == 0
    info = await sessions.get(conn, "shell", layout)
    assert info.state is SessionStatus.RUNNING, "detaching must leave the session running"
    log = text(await sessions.logs(conn, "shell", layout=layout))
    assert "echo:ping ✓\n" in log and "size:39 120\n" in log, "the log misses attached output"
    await sessions.stop(conn, "shell", timeout=5, layout=layout)

    # attaching to a finished session says so instead of opening an empty tmux
    env = {**os.environ, "HOME": str(short_tmp)}
    done = subprocess.run(
        argv, capture_output=True, stdin=subprocess.DEVNULL, env=env, timeout=60, check=False
    )
    assert done.returncode == 5
    assert b"session shell is not running" in done.stdout + done.stderr
