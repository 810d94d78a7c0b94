"""Session listings, names, attach argv and reconciliation with the store (no guest needed)."""

from __future__ import annotations

import base64
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from banger.daemon.sessions_svc import SessionUpdate, reconcile
from banger.errors import InvalidArgument
from banger.guest.sessions import (
    GuestListing,
    SessionError,
    SessionInfo,
    SessionStatus,
    attach_argv,
    attach_shell_command,
    generate_name,
    parse_listing,
)
from banger.guest.ssh import SSHTarget, ssh_argv
from banger.store.records import SessionRecord, SessionState

BOOT = "0b7c5e2a-6f0e-4a51-9a2b-8f7e3a1c2d4e"
OTHER_BOOT = "11111111-2222-3333-4444-555555555555"


def cmd_field(argv: list[str]) -> str:
    return base64.b64encode(json.dumps(argv).encode()).decode()


def line(name: str, live: str, exit_: str, started: str, ended: str, boot: str, cmd: str) -> str:
    return "\t".join(["session", name, live, exit_, started, ended, boot, cmd])


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_parse_listing_states() -> None:
    argv = ["sh", "-c", "echo 'hi'\n$HOME ✓"]
    text = "\n".join(
        [
            f"boot\t{BOOT}",
            line("run", "1", "", "100", "", BOOT, cmd_field(argv)),
            line("done", "0", "3", "100", "160", BOOT, cmd_field(["true"])),
            line("killed", "0", "137", "100", "170", BOOT, cmd_field(["x"])),
            line("rebooted", "0", "", "50", "", OTHER_BOOT, cmd_field(["x"])),
            line("orphan", "0", "", "100", "", BOOT, cmd_field(["x"])),
            # an exit file wins even while the tmux session is still closing
            line("closing", "1", "0", "100", "101", BOOT, cmd_field(["x"])),
            "",
        ]
    )
    listing = parse_listing(text)
    assert listing.boot_id == BOOT
    by_name = {s.name: s for s in listing.sessions}
    assert by_name["run"] == SessionInfo(
        "run", tuple(argv), SessionStatus.RUNNING, None, at(100), None
    )
    assert by_name["done"] == SessionInfo(
        "done", ("true",), SessionStatus.EXITED, 3, at(100), at(160)
    )
    assert by_name["killed"].exit_status == 137
    assert by_name["rebooted"].state is SessionStatus.LOST
    assert by_name["orphan"].state is SessionStatus.LOST
    assert by_name["closing"].state is SessionStatus.EXITED
    assert [s.name for s in listing.sessions] == [
        "run",
        "done",
        "killed",
        "rebooted",
        "orphan",
        "closing",
    ]


def test_parse_listing_skips_what_it_cannot_trust() -> None:
    text = "\n".join(
        [
            f"boot\t{BOOT}",
            line("Bad Name", "1", "", "1", "", BOOT, cmd_field(["x"])),
            "session\ttoo\tfew",
            line("nocmd", "1", "", "", "", BOOT, "!!not base64"),
            line("notjson", "1", "", "1", "", BOOT, base64.b64encode(b"{").decode()),
            line("notlist", "1", "", "1", "", BOOT, cmd_field({"a": 1})),  # type: ignore[arg-type]
            line("garbage-exit", "0", "x1", "1", "", BOOT, cmd_field(["x"])),
            "random noise",
        ]
    )
    by_name = {s.name: s for s in parse_listing(text).sessions}
    assert set(by_name) == {"nocmd", "notjson", "notlist", "garbage-exit"}
    assert by_name["nocmd"].command == () and by_name["nocmd"].started_at is None
    assert by_name["notjson"].command == () and by_name["notlist"].command == ()
    assert by_name["garbage-exit"].state is SessionStatus.LOST


def test_parse_listing_needs_a_boot_id() -> None:
    with pytest.raises(SessionError, match="no boot id"):
        parse_listing(line("a", "1", "", "1", "", BOOT, cmd_field(["x"])))
    with pytest.raises(SessionError):
        parse_listing("boot\tnot a boot id\n")
    assert parse_listing(f"boot\t{BOOT}\n") == GuestListing(BOOT, ())


@pytest.mark.parametrize(
    ("argv", "prefix"),
    [
        (["/usr/bin/python3", "x"], "python3-"),
        (["Claude Code"], "claude-code-"),
        (["..."], "s-"),
        (["☃"], "s-"),
        ([], "s-"),
        (["a" * 100], "a" * 40 + "-"),
    ],
)
def test_generated_names_are_valid(argv: list[str], prefix: str) -> None:
    name = generate_name(argv)
    assert name.startswith(prefix)
    assert len(name) == len(prefix) + 6
    assert generate_name(argv) != name


def test_attach_argv_is_ssh_with_a_pty_running_tmux_attach(tmp_path: Path) -> None:
    target = SSHTarget("10.0.0.2", tmp_path / "known_hosts", tmp_path / "id")
    argv = attach_argv(ssh_argv(target, tty=True), "agent")
    assert argv[: argv.index("10.0.0.2") + 1] == ssh_argv(target, tty=True)
    remote = shlex.split(argv[-1])
    assert remote[:3] == ["exec", "sh", "-c"]
    assert remote[4:] == [
        "banger-session",
        "/root/.banger/sessions/agent",
        "/run/banger/tmux.sock",
        "=banger-agent:",
        "agent",
    ]
    assert "attach-session" in remote[3] and "-u" in remote[3]
    with pytest.raises(InvalidArgument, match="needs -t"):
        attach_argv(ssh_argv(target), "agent")
    assert attach_shell_command("a.b") == "tmux -S /run/banger/tmux.sock attach -t banger-a,b"


def record(name: str, state: SessionState, exit_status: int | None = None) -> SessionRecord:
    return SessionRecord(
        id=f"id-{name}",
        vm_id="vm",
        name=name,
        command=("x",),
        state=state,
        exit_status=exit_status,
        started_at=at(100),
        ended_at=None,
    )


def info(name: str, state: SessionStatus, exit_status: int | None = None) -> SessionInfo:
    ended = at(200) if state is SessionStatus.EXITED else None
    return SessionInfo(name, ("x",), state, exit_status, at(100), ended)


def test_reconcile_with_a_running_guest() -> None:
    records = [
        record("running", SessionState.RUNNING),
        record("starting", SessionState.STARTING),
        record("ended-unwatched", SessionState.RUNNING),
        record("vanished", SessionState.RUNNING),
        record("guest-lost", SessionState.RUNNING),
        record("already-exited", SessionState.EXITED, 0),
        record("already-lost", SessionState.FAILED),
    ]
    guest = GuestListing(
        BOOT,
        (
            info("running", SessionStatus.RUNNING),
            info("starting", SessionStatus.RUNNING),
            info("ended-unwatched", SessionStatus.EXITED, 9),
            info("guest-lost", SessionStatus.LOST),
            info("already-exited", SessionStatus.EXITED, 0),
            info("already-lost", SessionStatus.RUNNING),  # a finished record never revives
            info("unknown-to-store", SessionStatus.RUNNING),
        ),
    )
    assert reconcile(records, guest) == [
        SessionUpdate("id-starting", "starting", SessionStatus.RUNNING),
        SessionUpdate("id-ended-unwatched", "ended-unwatched", SessionStatus.EXITED, 9, at(200)),
        SessionUpdate("id-vanished", "vanished", SessionStatus.LOST),
        SessionUpdate("id-guest-lost", "guest-lost", SessionStatus.LOST),
    ]


def test_reconcile_with_a_stopped_vm_loses_every_open_session() -> None:
    records = [
        record("a", SessionState.RUNNING),
        record("b", SessionState.STARTING),
        record("c", SessionState.EXITED, 1),
    ]
    assert reconcile(records, None) == [
        SessionUpdate("id-a", "a", SessionStatus.LOST),
        SessionUpdate("id-b", "b", SessionStatus.LOST),
    ]
    assert reconcile([], None) == []
