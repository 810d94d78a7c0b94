"""Sessions against a real guest, through the CLI → bangerd → SSH → tmux in the guest.

One installation and one fast-init VM (``sess``) are shared by the module;
the last test stops the VM (its sessions become lost), so it runs last. The
``vm run --session`` tests boot VMs of their own.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from banger.errors import Conflict, InvalidArgument
from tests.e2e.harness import Banger, banger_env, daemon_pid
from tests.e2e.leftovers import assert_nothing_left, vm_kept
from tests.hostile import HOSTILE
from tests.support import VENV_BIN, assert_refusal, needs_root, stop_pid, wait_until
from tests.terminal import Terminal

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "sess"


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    with banger_env() as env:
        env.banger("vm", "create", "--name", VM, "--init", "fast", "--start")
        yield env


def sessions(b: Banger) -> dict[str, dict[str, Any]]:
    listed = json.loads(b.banger("session", "list", VM, "--json").stdout)
    return {s["name"]: s for s in listed}


def follow(b: Banger, name: str) -> subprocess.CompletedProcess[str]:
    return b.banger("session", "logs", "-f", VM, name, check=False, timeout=300)


def test_logs_follow_streams_in_order_and_ends_with_the_status(b: Banger) -> None:
    script = 'for i in 1 2 3 4 5; do echo "line $i"; sleep 1; done; exit 3'
    started = b.banger("session", "start", VM, "--name", "count", "--", "sh", "-c", script)
    assert started.stdout.strip() == "count"
    result = follow(b, "count")
    assert result.returncode == 3, result.stderr
    assert result.stdout.replace("\r\n", "\n") == "".join(f"line {i}\n" for i in range(1, 6))
    assert "[session count exited with status 3]" in result.stderr
    listed = sessions(b)["count"]
    assert (listed["state"], listed["exit_status"]) == ("exited", 3)
    assert listed["command"] == ["sh", "-c", script] and listed["ended_at"]
    tail = b.banger("session", "logs", "--tail", "2", VM, "count")
    assert tail.stdout.replace("\r\n", "\n") == "line 4\nline 5\n"


def test_a_session_that_ended_unwatched_shows_its_status(b: Banger) -> None:
    b.banger("session", "start", VM, "--name", "quick", "--", "sh", "-c", "exit 4")

    def ended() -> dict[str, Any]:
        quick = sessions(b)["quick"]
        return {} if quick["state"] == "running" else quick

    quick = wait_until(ended, 120, "the listing to show the session's end")
    assert (quick["state"], quick["exit_status"]) == ("exited", 4)
    dup = b.banger("session", "start", VM, "--name", "quick", "--", "true", check=False)
    assert_refusal(
        dup,
        Conflict.exit_code,
        "already has a session named 'quick' (exited)",
        hint=f"banger session rm {VM} quick frees the name",
    )
    b.banger("session", "rm", VM, "quick")
    assert "quick" not in sessions(b)


def test_utf8_locale_and_plain_logs_off_a_terminal(b: Banger) -> None:
    """Issue #21 item 11: a UTF-8 locale; logs into a pipe are text, --raw is the terminal's."""
    script = 'printf "%s\\n" "$LANG $LC_ALL"; printf é | wc -m; printf "\\033[31mred\\033[0m\\n"'
    b.banger("session", "start", VM, "--name", "utf8", "--", "sh", "-c", script)
    assert follow(b, "utf8").returncode == 0
    plain = b.banger("session", "logs", VM, "utf8").stdout  # stdout is a pipe here
    assert plain == "C.UTF-8 C.UTF-8\n1\nred\n", repr(plain)  # é is one character
    raw = b.banger("session", "logs", "--raw", VM, "utf8").stdout
    assert "\x1b[31mred\x1b[0m" in raw, repr(raw)  # the escapes as the terminal got them


def test_json_where_commands_print(b: Banger) -> None:
    """Issue #21 item 12: vm ssh, vm run and session send/attach take --json."""
    script = "echo out; echo err >&2; exit 3"
    ran = b.banger("vm", "ssh", "--json", VM, "--", "sh", "-c", script, check=False)
    assert ran.returncode == 3, ran  # the command's status, as without --json
    data = json.loads(ran.stdout)
    assert (data["vm"], data["command"], data["exit_status"]) == (VM, ["sh", "-c", script], 3)
    assert (data["stdout"], data["stderr"]) == ("out\n", "err\n"), data
    shell = b.banger("vm", "ssh", "--json", VM, check=False)
    assert_refusal(shell, InvalidArgument.exit_code, "--json: vm ssh needs a COMMAND")

    b.banger("session", "start", VM, "--name", "typed", "--", "sh", "-c", "read -r l")
    sent = json.loads(b.banger("session", "send", "--json", VM, "typed", "x", "--enter").stdout)
    assert sent == {"vm": VM, "session": "typed", "sent": "x", "enter": True}
    assert follow(b, "typed").returncode == 0

    run = b.banger("vm", "run", "--json", "--init", "fast", "--no-workspace", "--rm",
                   "--", "sh", "-c", "echo hi; exit 4", check=False)  # fmt: skip
    assert run.returncode == 4, run
    data = json.loads(run.stdout)
    assert (data["stdout"], data["exit_status"], data["removed"]) == ("hi\n", 4, True), data
    assert data["vm"] not in _vm_names(b)


def test_hostile_arguments_reach_the_guest_unchanged(b: Banger) -> None:
    writer = 'printf "%s\\0" "$@" "$PWD" "$V" > /root/argv.out'
    b.banger(
        "session", "start", VM, "--name", "hostile", "--cwd", "/tmp", "--env", "V=$HOME 'x' ✓",
        "--", "sh", "-c", writer, "sh", *HOSTILE,
    )  # fmt: skip
    assert follow(b, "hostile").returncode == 0
    out = b.banger("vm", "ssh", VM, "--", "cat", "/root/argv.out").stdout
    assert out.split("\0")[:-1] == [*HOSTILE, "/tmp", "$HOME 'x' ✓"]


def test_send_and_stop(b: Banger) -> None:
    program = 'IFS= read -r line; printf "got:[%s]\\n" "$line"'
    b.banger("session", "start", VM, "--name", "reader", "--", "sh", "-c", program)
    b.banger("session", "send", VM, "reader", "hello 'guest' $x", "--enter")
    result = follow(b, "reader")
    assert result.returncode == 0
    assert "got:[hello 'guest' $x]" in result.stdout

    handles = 'trap "echo bye; exit 7" TERM; while :; do sleep 0.2; done'
    ignores = 'trap "" TERM; while :; do sleep 0.2; done'
    b.banger("session", "start", VM, "--name", "polite", "--", "sh", "-c", handles)
    b.banger("session", "start", VM, "--name", "stubborn", "--", "sh", "-c", ignores)
    polite = json.loads(b.banger("session", "stop", VM, "polite", "--json").stdout)
    assert (polite["outcome"], polite["session"]["exit_status"]) == ("signalled", 7)
    began = time.monotonic()
    stubborn = json.loads(
        b.banger("session", "stop", VM, "stubborn", "--timeout", "2", "--json").stdout
    )
    # A lower bound only, the wait being the behaviour: TERM is ignored, so the
    # KILL comes after the whole --timeout.
    assert time.monotonic() - began >= 2
    assert (stubborn["outcome"], stubborn["session"]["exit_status"]) == ("killed", 137)
    assert sessions(b)["stubborn"]["state"] == "exited"


def _attach(b: Banger, name: str) -> bytes:
    argv = b.as_owner(["env", "TERM=xterm-256color", str(VENV_BIN / "banger"), "session",
                       "attach", VM, name])  # fmt: skip
    term = Terminal(argv, {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}, rows=30, cols=100)
    try:
        term.expect(b"ready", timeout=120)
        term.type(b"size\r")
        term.expect(b"size:29 100", timeout=60)
        term.type(b"ping\r")
        term.expect(b"echo:ping", timeout=60)
        time.sleep(0.5)  # C-b, then d, at human speed (tmux treats fast input as a paste)
        term.type(b"\x02")
        time.sleep(0.5)
        term.type(b"d")
        term.expect(b"[detached", timeout=60)
        assert term.proc.wait(timeout=60) == 0
        return term.seen
    finally:
        term.close()


def test_attach_through_a_pty_and_detach_leaves_it_running(b: Banger) -> None:
    program = (
        'while IFS= read -r l; do if [ "$l" = size ]; then echo "size:$(stty size)";'
        ' else echo "echo:$l"; fi; done'
    )
    b.banger("session", "start", VM, "--name", "shell", "--", "sh", "-c", "echo ready; " + program)
    _attach(b, "shell")
    assert sessions(b)["shell"]["state"] == "running"
    log = b.banger("session", "logs", VM, "shell").stdout.replace("\r\n", "\n")
    assert "echo:ping\n" in log


def _vm_run_session(b: Banger, vm: str, program: str) -> Terminal:
    """``banger vm run --rm --session main -- sh -c PROGRAM`` on a real pty, up to ``ready``."""
    command = ["sh", "-c", "echo ready; " + program]
    argv = b.as_owner(["env", "TERM=xterm-256color", str(VENV_BIN / "banger"), "vm", "run",
                       "--name", vm, "--init", "fast", "--no-workspace", "--rm",
                       "--session", "main", "--", *command])  # fmt: skip
    term = Terminal(argv, {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}, rows=30, cols=100)
    try:
        term.expect(b"ready", timeout=600)
    except BaseException:
        term.close()
        raise
    return term


def _vm_names(b: Banger) -> list[str]:
    return [v["name"] for v in json.loads(b.banger("vm", "list", "--json").stdout)]


def test_vm_run_session_that_ends_while_attached_is_removed_with_its_status(b: Banger) -> None:
    term = _vm_run_session(b, "runs", 'IFS= read -r l; echo "got:$l"; exit 5')
    try:
        term.type(b"hello 'x' $HOME\r")
        term.expect(b"got:hello 'x' $HOME", timeout=60)
        assert term.proc.wait(timeout=300) == 5
        term.expect(b"[session main exited with status 5]", timeout=10)
    finally:
        term.close()
    assert "runs" not in _vm_names(b)  # --rm: the session ended, so the VM went


def test_vm_run_session_detached_keeps_running_and_keeps_its_vm(b: Banger) -> None:
    term = _vm_run_session(b, "keeps", 'while IFS= read -r l; do echo "echo:$l"; done')
    try:
        term.type(b"ping\r")
        term.expect(b"echo:ping", timeout=60)
        time.sleep(0.5)  # C-b, then d, at human speed (tmux treats fast input as a paste)
        term.type(b"\x02")
        time.sleep(0.5)
        term.type(b"d")
        assert term.proc.wait(timeout=120) == 0
        term.expect(b"--rm: VM keeps kept while its session runs", timeout=10)
        assert b"banger session attach keeps main" in term.seen
    finally:
        term.close()
    assert "keeps" in _vm_names(b)
    listed = json.loads(b.banger("session", "list", "keeps", "--json").stdout)
    assert [(s["name"], s["state"]) for s in listed] == [("main", "running")]
    b.banger("session", "send", "keeps", "main", "still here", "--enter")
    wait_until(
        lambda: "echo:still here" in b.banger("session", "logs", "keeps", "main").stdout,
        120,
        "the detached session answering",
    )
    b.banger("vm", "rm", "--force", "keeps", timeout=300)


def test_an_interactive_vm_run_shows_no_banner_motd_or_last_login(b: Banger) -> None:
    """Issue #21 item 17: the quiet login seen through a real pty, not only on the disk."""
    argv = b.as_owner(["env", "TERM=xterm-256color", str(VENV_BIN / "banger"), "vm", "run",
                       "--name", "quiet", "--init", "fast", "--no-workspace", "--rm"])  # fmt: skip
    term = Terminal(argv, {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}, rows=30, cols=100)
    try:
        # the shell answers once it is up (typed input before that is only echoed)
        wait_until(lambda: term.answers(b"echo mark$((6*7))\r", b"mark42"), 600, "the VM's shell")
        term.type(b"exit\r")
        assert term.proc.wait(timeout=300) == 0
        seen = term.seen  # the whole session: the login and the two commands
    finally:
        term.close()
    for noise in (b"Last login", b"ABSOLUTELY NO WARRANTY", b"Linux quiet", b"Debian GNU/Linux"):
        assert noise not in seen, seen.decode("utf-8", "replace")
    assert "quiet" not in _vm_names(b)  # --rm


def test_vm_run_session_refused_before_any_vm_exists(b: Banger) -> None:
    kept = [vm_kept(b, name) for name in _vm_names(b)]
    no_tty = b.banger("vm", "run", "--session", "x", "--", "true", check=False)
    assert_refusal(no_tty, InvalidArgument.exit_code, "--session attaches this terminal")
    bad = b.banger("vm", "run", "--session", "Bad Name", "--", "true", check=False)
    assert_refusal(bad, InvalidArgument.exit_code, "--session: name: not a valid session name")
    bare = b.banger("vm", "run", "--session", "x", check=False)
    assert_refusal(bare, InvalidArgument.exit_code, "--session: needs a COMMAND")
    assert_nothing_left(b, kept)


def test_an_unwatched_session_keeps_the_guests_end_time(b: Banger) -> None:
    b.banger("session", "start", VM, "--name", "early", "--", "true")
    where = "/root/.banger/sessions/early"  # the guest's own record (banger.guest.session_scripts)

    def guest(script: str) -> str:  # over SSH, not through a session listing; "" if it failed
        out = b.banger("vm", "ssh", VM, "--", "sh", "-c", script, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    ended_in_guest = int(
        wait_until(
            lambda: guest(f"test -e {where}/exit && cat {where}/ended"),
            120,
            "the guest recording the session's end",
        )
    )
    # Nobody lists it meanwhile, so the daemon learns of the end late: let the
    # guest's clock pass the end by 3 s (an end stamped when the daemon noticed
    # would then differ from the guest's record).
    wait_until(
        lambda: int(guest("date +%s") or 0) >= ended_in_guest + 3,
        120,
        "the guest's clock 3 s past the session's end",
    )
    ended = datetime.fromisoformat(sessions(b)["early"]["ended_at"])
    assert ended == datetime.fromtimestamp(ended_in_guest, UTC), (ended, ended_in_guest)


def test_daemon_restart_keeps_sessions_and_a_stopped_vm_loses_them(b: Banger) -> None:
    b.banger("session", "start", VM, "--name", "survivor", "--", "sleep", "600")
    stop_pid(daemon_pid(b))  # the next CLI call starts a new bangerd, which reconciles
    listed = sessions(b)
    assert listed["survivor"]["state"] == "running"
    assert listed["shell"]["state"] == "running"
    b.banger("session", "send", VM, "shell", "after restart", "--enter")
    log = b.banger("session", "logs", VM, "shell").stdout
    assert "echo:after restart" in log

    b.banger("vm", "stop", VM, timeout=300)
    listed = sessions(b)
    assert (listed["survivor"]["state"], listed["survivor"]["exit_status"]) == ("lost", None)
    assert listed["shell"]["state"] == "lost"
    assert (listed["count"]["state"], listed["count"]["exit_status"]) == ("exited", 3)
    # the log is on the work disk: readable with the VM stopped (issue #21 item 11)
    stopped_log = b.banger("session", "logs", "--tail", "2", VM, "count").stdout
    assert stopped_log == "line 4\nline 5\n", repr(stopped_log)
    # a lost session's name is freed by `session rm`, not attach
    reused = b.banger("session", "start", VM, "--name", "survivor", "--", "true", check=False)
    assert_refusal(
        reused,
        Conflict.exit_code,
        "already has a session named 'survivor' (lost)",
        hint=f"banger session rm {VM} survivor frees the name",
    )
    # stdin is not a terminal here, so the CLI refuses before it asks the daemon
    refused = b.banger("session", "attach", VM, "survivor", check=False)
    assert_refusal(refused, InvalidArgument.exit_code, "attach needs a terminal")
    db = sqlite3.connect(f"file:{b.state_dir / 'banger.db'}?mode=ro", uri=True)
    try:  # stored as lost (schema v4), not as failed
        stored = dict(db.execute("SELECT name, state FROM sessions").fetchall())
    finally:
        db.close()
    assert (stored["survivor"], stored["shell"], stored["count"]) == ("lost", "lost", "exited")
