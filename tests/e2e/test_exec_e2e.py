"""``banger vm exec`` and ``vm run -- CMD`` against a real guest (issue #17 items 2, 4, 6, 7).

One running VM for the module (``ex``, fast init); one more boot for
``vm run --rm``. Everything goes through the real CLI as the owner, inside the
namespace, through bangerd's exec WebSocket on its held connection. "No
process left" is checked with ``ps`` in the guest.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator

import pytest

from banger.errors import Conflict, NotFound
from tests.e2e.harness import Banger, banger_env
from tests.support import VENV_BIN, assert_refusal, needs_root, wait_until

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "ex"


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        env.banger("vm", "create", "--name", VM, "--init", "fast", "--start")
        yield env


def exec_(
    b: Banger, *argv: str, check: bool = False, **kw: object
) -> subprocess.CompletedProcess[str]:
    return b.banger("vm", "exec", VM, "--", *argv, check=check, **kw)  # type: ignore[arg-type]


def guest_count(b: Banger, pattern: str) -> int:
    """How many guest processes' command lines match ``pattern`` (ps, over a fresh exec)."""
    out = exec_(b, "sh", "-c", f"ps -eo args | grep -c -- '{pattern}' || true", check=True)
    return int(out.stdout.strip() or "0")


def popen_exec(b: Banger, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        b.as_owner([str(VENV_BIN / "banger"), "vm", "exec", VM, "--", *argv]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_exit_codes_signals_stdin_env_and_cwd(b: Banger) -> None:
    assert exec_(b, "true").returncode == 0
    assert exec_(b, "sh", "-c", "exit 7").returncode == 7
    assert exec_(b, "sh", "-c", "kill -TERM $$").returncode == 128 + 15
    r = b.banger("vm", "exec", "-i", "-e", "A=x y", "-w", "/tmp", VM, "--",
                 "sh", "-c", 'cat; echo "$A|$PWD" >&2', input="round trip\n")  # fmt: skip
    assert (r.stdout, r.stderr) == ("round trip\n", "x y|/tmp\n")
    missing = exec_(b, "no-such-program")
    assert missing.returncode == 127 and "no-such-program" in missing.stderr


def test_commands_run_through_the_guests_runner(b: Banger) -> None:
    # Issue #17 item 8: not an sshd session per command, banger's runner spawns it.
    r = exec_(b, "sh", "-c", "ps -o args= -p $PPID", check=True)
    assert r.stdout.startswith("python3 -I -S -c"), r.stdout


def test_the_default_image_has_python3(b: Banger) -> None:
    # An agent sandbox without python3 surprises people (issue #21 item 15).
    r = exec_(b, "python3", "-c", "print(6*7)")
    assert (r.returncode, r.stdout) == (0, "42\n"), r.stderr


def test_ten_megabytes_of_interleaved_stdout_and_stderr_without_loss(b: Banger) -> None:
    # Two writers at once, one per stream; every line numbered, so a lost or
    # duplicated chunk shows. ~5 MB each.
    r = exec_(b, "sh", "-c", "seq 1 700000 >&2 & seq 1 700000; wait", check=True)
    expected = "".join(f"{i}\n" for i in range(1, 700001))
    assert len(r.stdout) + len(r.stderr) > 9_000_000
    assert r.stdout == expected
    assert r.stderr == expected


def test_pty_size_and_resize_through_a_real_pty(b: Banger) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 21, 73, 0, 0))
    before = termios.tcgetattr(slave)
    loop = "stty size; while read x; do stty size; done"
    proc = subprocess.Popen(
        b.as_owner(["env", "TERM=xterm", str(VENV_BIN / "banger"), "vm", "exec", "-it", VM, "--",
                    "sh", "-c", loop]),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )  # fmt: skip
    seen = b""
    try:
        deadline = time.monotonic() + 120
        while b"21 73" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        assert b"21 73" in seen, seen
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 131, 0, 0))
        while b"44 131" not in seen and time.monotonic() < deadline:
            os.write(master, b"\r")  # each Enter prints the size the guest sees now
            seen += os.read(master, 4096)
        assert b"44 131" in seen, seen
        os.write(master, b"\x04")
        assert proc.wait(60) == 0
        assert termios.tcgetattr(slave) == before  # raw mode undone
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


def test_timeout_kills_the_whole_process_group(b: Banger) -> None:
    r = b.banger("vm", "exec", "--timeout", "3", VM, "--",
                 "sh", "-c", "sleep 311 & setsid sleep 312 & wait", check=False)  # fmt: skip
    assert r.returncode == 128 + 15, r.stderr
    assert "timed out" in r.stderr
    wait_until(lambda: guest_count(b, "[s]leep 31[12]") == 0, 60, "no sleep left in the guest")


def test_disconnect_and_ctrl_c(b: Banger) -> None:
    # The client vanishes (SIGKILL: nothing is forwarded): bangerd kills the command.
    proc = popen_exec(b, "sh", "-c", "echo up; sleep 321")
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    assert guest_count(b, "^[s]leep 321") == 1
    proc.kill()
    proc.communicate()  # reaps it and closes the pipes
    wait_until(lambda: guest_count(b, "[s]leep 321") == 0, 60, "no sleep left after a disconnect")
    # Ctrl-C reaches the remote command (its process group).
    proc = popen_exec(b, "sh", "-c", "echo up; sleep 322")
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + 2
    wait_until(lambda: guest_count(b, "[s]leep 322") == 0, 60, "no sleep left after Ctrl-C")


def test_sixteen_concurrent_execs(b: Banger) -> None:
    procs = [popen_exec(b, "sh", "-c", f"sleep 1; echo {i}") for i in range(16)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, outs
    assert [o for o, _ in outs] == [f"{i}\n" for i in range(16)]


def test_unknown_and_stopped_vm(b: Banger) -> None:
    r = b.banger("vm", "exec", "nope", "--", "true", check=False)
    assert_refusal(r, NotFound.exit_code, "nope")
    b.banger("vm", "create", "--name", "off", "--init", "fast")
    r = b.banger("vm", "exec", "off", "--", "true", check=False)
    assert_refusal(r, Conflict.exit_code, "not running", hint="banger vm start off")
    b.banger("vm", "rm", "off")


def test_guest_sshd_killed_mid_command_then_the_next_call_reconnects(b: Banger) -> None:
    proc = popen_exec(b, "sh", "-c", "echo up; sleep 331")
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    # Kill the sshd process serving the held connection (the sleep's shell's parent),
    # from a separate login (vm ssh: the system ssh, its own sshd process).
    # The sleep's shell's parent is the guest's command runner; its parent is sshd's.
    killer = (
        # anchored: this killer's own command line mentions the sleep too
        "p=$(pgrep -f '^sleep 331$'); "
        "while p=$(ps -o ppid= -p $p | tr -d ' '); [ \"$p\" -gt 1 ]; do "
        "case $(ps -o args= -p $p) in sshd*) break;; esac; done; "
        "ps -o args= -p $p; kill -KILL $p"
    )
    k = b.banger("vm", "ssh", VM, "--", "sh", "-c", killer)
    assert "sshd" in k.stdout, k.stdout
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "closed before the command ended" in err, err
    assert exec_(b, "echo", "again", check=True).stdout == "again\n"
    wait_until(lambda: guest_count(b, "[s]leep 331") == 0, 60, "the orphan killed on reconnect")


def test_vm_run_returns_the_status_and_rm_completes(b: Banger) -> None:
    r = b.banger("vm", "run", "--name", "once", "--init", "fast", "--rm", "--",
                 "sh", "-c", "echo hi; exit 5", check=False)  # fmt: skip
    assert (r.returncode, r.stdout) == (5, "hi\n"), r.stderr
    names = [v["name"] for v in json.loads(b.banger("vm", "list", "--json").stdout)]
    assert "once" not in names


def test_without_python3_execs_fall_back_to_sshd_sessions(b: Banger) -> None:
    # Last in the module: the refusal is remembered for the held connection.
    # python3 taken away and the runner stopped, from a separate login (vm ssh).
    hide = (
        "mv /usr/bin/python3 /usr/bin/python3.hidden && "
        "pkill -KILL -f 'HEADER = struct[.]Struct'; true"
    )
    b.banger("vm", "ssh", VM, "--", "sh", "-c", hide)
    try:
        r = exec_(b, "sh", "-c", "ps -o args= -p $PPID", check=True)
        assert "sshd" in r.stdout, r.stdout
        r = exec_(b, "sh", "-c", "echo out; echo err >&2; exit 4")
        assert (r.returncode, r.stdout, r.stderr) == (4, "out\n", "err\n")
    finally:
        b.banger("vm", "ssh", VM, "--", "mv", "/usr/bin/python3.hidden", "/usr/bin/python3")
