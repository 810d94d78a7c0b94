from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from banger.procinfo import (
    is_same_process,
    parse_stat,
    process_start_time,
    reap,
    send_signal,
    wait_for_exit,
)


def stat_line(comm: str, state: str = "S", start: int = 123456) -> str:
    fields = [state, *[str(i) for i in range(4, 22)], str(start), "999", "0"]
    return f"4242 ({comm}) " + " ".join(fields) + "\n"


@pytest.mark.parametrize("comm", ["qemu", "a b", "(a) b)", ") ) )", "x)(y", ""])
def test_parse_stat_tricky_comm(comm: str) -> None:
    assert parse_stat(stat_line(comm)) == ("S", 123456)


def test_parse_stat_garbage() -> None:
    assert parse_stat("") is None
    assert parse_stat("1 (x) S 2 3") is None
    assert parse_stat(stat_line("x").replace("123456", "abc")) is None


def test_own_process() -> None:
    start = process_start_time(os.getpid())
    assert start is not None and start > 0
    assert is_same_process(os.getpid(), start)
    assert not is_same_process(os.getpid(), start + 1)
    assert process_start_time(0) is None
    assert process_start_time(2**22 + 1) is None


def test_real_process_with_parentheses_in_its_name(tmp_path: Path) -> None:
    # comm is taken from the executable's name: give it spaces and parentheses.
    exe = tmp_path / "(a) b)"
    exe.symlink_to(sys.executable)
    child = subprocess.Popen([exe, "-c", "import time; time.sleep(30)"])
    try:
        text = Path(f"/proc/{child.pid}/stat").read_text()
        assert "((a) b))" in text
        start = process_start_time(child.pid)
        assert start is not None
        assert is_same_process(child.pid, start)
    finally:
        child.kill()
        child.wait()
    assert not is_same_process(child.pid, start)


async def test_wait_for_exit_and_zombie_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    start = process_start_time(child.pid)
    assert start is not None
    assert await wait_for_exit(child.pid, 0.05, start) is False  # it sleeps 0.3 s first
    # True: the exit was seen (a timeout says False); 120 s is only a hang bound.
    assert await wait_for_exit(child.pid, 120, start) is True
    # Exited but not reaped: a zombie is not "the same running process".
    assert not is_same_process(child.pid, start)
    status = reap(child.pid)
    assert status is not None and os.waitstatus_to_exitcode(status) == 0
    child.returncode = 0  # reaped by us; keep Popen from warning
    assert await wait_for_exit(child.pid, 1, start) is True


async def test_wait_for_exit_wakes_on_kill_without_polling() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    start = process_start_time(child.pid)
    assert start is not None
    waiter = asyncio.create_task(wait_for_exit(child.pid, None, start))  # no timeout of its own
    await asyncio.sleep(0.1)
    assert not waiter.done()
    assert send_signal(child.pid, start, signal.SIGKILL)
    # Only the exit can end the wait; 120 s is a hang bound.
    assert await asyncio.wait_for(waiter, 120) is True
    child.wait()
    assert not send_signal(child.pid, start, signal.SIGKILL)


def test_send_signal_refuses_a_different_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        start = process_start_time(child.pid)
        assert start is not None
        assert not send_signal(child.pid, start - 1, signal.SIGKILL)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_reap_of_a_non_child_is_harmless() -> None:
    assert reap(1) is None
