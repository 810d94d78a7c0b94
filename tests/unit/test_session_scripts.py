"""Guest-side session scripts as text: quoting, syntax, and the generated run file under real sh."""

from __future__ import annotations

import base64
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banger.errors import InvalidArgument
from banger.guest import session_scripts as scripts
from banger.guest.session_scripts import GuestLayout, run_file, tmux_session, validate_name
from banger.guest.ssh import remote_command

HOSTILE = [
    "it's",
    '"double"',
    "$HOME",
    "${HOME}",
    "`id`",
    "$(id)",
    "a\nb",
    "tab\there",
    "ünïcödé ☃ 🚀",
    "",
    "*",
    "; true",
    "\\",
    "-n",
    "'",
    "a'\"'\"b",
]
LAYOUT = GuestLayout(root="/tmp/bg-sessions", socket="/tmp/bg-tmux.sock")
CONSTANT_SCRIPTS = {
    "START": scripts.START,
    "WRAPPER": scripts.WRAPPER,
    "LIST": scripts.LIST,
    "LOGS": scripts.LOGS,
    "FOLLOW": scripts.FOLLOW,
    "SEND": scripts.SEND,
    "STOP": scripts.STOP,
    "STOP_THEN_LIST": scripts.STOP_THEN_LIST,
    "ATTACH": scripts.ATTACH,
    "FORGET": scripts.FORGET,
}


@pytest.mark.parametrize("name", sorted(CONSTANT_SCRIPTS))
def test_constant_scripts_parse_as_posix_sh(name: str) -> None:
    # dash is Debian's /bin/sh, in the guest as here; -n parses without running
    done = subprocess.run(
        ["dash", "-n", "-c", CONSTANT_SCRIPTS[name]], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
@pytest.mark.parametrize("name", sorted(CONSTANT_SCRIPTS))
def test_constant_scripts_parse_under_a_second_shell(name: str) -> None:
    done = subprocess.run(
        ["busybox", "sh", "-n", "-c", CONSTANT_SCRIPTS[name]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_scripts_take_values_only_as_positional_parameters() -> None:
    argv = scripts.start_argv(LAYOUT, "x", ["echo", "$(id)"], cwd="/tmp/'q'", env={"A": "`b`"})
    assert argv[:4] == ["sh", "-c", scripts.START, "banger-session"]
    # what sshd hands to the login shell splits back into exactly this argv
    assert shlex.split(remote_command(argv)) == ["exec", *argv]
    root, sock, name, tsess, run_b64, cmd_b64, wrapper, chan = argv[4:]
    assert (root, sock, name, tsess, wrapper, chan) == (
        LAYOUT.root,
        LAYOUT.socket,
        "x",
        "banger-x",
        scripts.WRAPPER,
        "banger-x-started",
    )
    assert json.loads(base64.b64decode(cmd_b64)) == ["echo", "$(id)"]
    assert base64.b64decode(run_b64).decode() == run_file(
        LAYOUT, "x", ["echo", "$(id)"], "/tmp/'q'", {"A": "`b`"}
    )


def test_run_file_quotes_every_word() -> None:
    text = run_file(LAYOUT, "x", ["printf", "%s\\n", *HOSTILE], cwd="/a b/$c", env={"K": "$V 'w'"})
    assert text.endswith("\nexec " + shlex.join(["printf", "%s\\n", *HOSTILE]) + "\n")
    assert "cd -- '/a b/$c' ||" in text
    assert "export K='$V '\"'\"'w'\"'\"''" in text


def _run(
    tmp: Path, text: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    (tmp / "run").write_text(text)
    return subprocess.run(
        ["/bin/sh", str(tmp / "run")],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), **(env or {})},
        check=False,
        timeout=30,
    )


def test_run_file_under_real_sh_delivers_hostile_argv_env_and_cwd(tmp_path: Path) -> None:
    cwd = tmp_path / "dir 'with' $x ✓"
    cwd.mkdir()
    env = {"V": "`x` $HOME 'q'\nnext ✓", "EMPTY": ""}
    text = run_file(
        LAYOUT,
        "x",
        ["sh", "-c", 'printf "%s\\0" "$@" "$PWD" "$V" "$EMPTY"', "sh", *HOSTILE],
        cwd=str(cwd),
        env=env,
    )
    done = _run(tmp_path, text)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split("\0")[:-1] == [*HOSTILE, str(cwd), env["V"], ""]
    assert (tmp_path / "pid").read_text().strip().isdigit()


def test_run_file_statuses_for_missing_cwd_and_program(tmp_path: Path) -> None:
    done = _run(tmp_path, run_file(LAYOUT, "x", ["true"], cwd=str(tmp_path / "missing")))
    assert done.returncode == 126
    assert b"banger: cannot cd to" in done.stderr
    assert _run(tmp_path, run_file(LAYOUT, "x", ["no-such-program-xyz"])).returncode == 127
    home = _run(tmp_path, run_file(LAYOUT, "x", ["pwd"]))
    assert home.stdout.decode().strip() == str(tmp_path), "without cwd, the command starts in $HOME"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.text(st.characters(blacklist_characters="\0", codec="utf-8")), max_size=5))
def test_any_argv_survives_the_run_file(tmp_path: Path, args: list[str]) -> None:
    text = run_file(LAYOUT, "x", ["printf", "%s\\0", *args])
    done = _run(tmp_path, text)
    assert done.returncode == 0, done.stderr
    expected = "".join(f"{a}\0" for a in args) if args else "\0"
    assert done.stdout.decode() == expected


@pytest.mark.parametrize(
    ("argv", "cwd", "env", "message"),
    [
        ([], None, None, "command: empty argv"),
        (["-x"], None, None, "must not start with '-'"),
        (["a\0b"], None, None, "NUL"),
        (["true"], "", None, "cwd: not a directory path"),
        (["true"], None, {"1BAD": "x"}, "env: not a variable name: '1BAD'"),
        (["true"], None, {"A=B": "x"}, "env: not a variable name"),
        (["true"], None, {"A": "x\0"}, "env: A: values cannot contain NUL"),
    ],
)
def test_run_file_refuses(
    argv: list[str], cwd: str | None, env: dict[str, str] | None, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        run_file(LAYOUT, "x", argv, cwd, env)


@pytest.mark.parametrize("name", ["a", "0", "agent-1", "my_session.2", "a" * 63, "x.y-z_0"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "A", "-a", ".a", "_a", "a b", "a/b", "a:b", "a" * 64, "ä", "a\n", "a;b", "$x"]
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="name: not a valid session name"):
        validate_name(name)


def test_tmux_names_are_reversible_and_exact() -> None:
    # tmux turns '.' into '_' in session names, which would merge a.b and a_b
    assert tmux_session("a.b") != tmux_session("a_b")
    assert tmux_session("a.b") == "banger-a,b"
    assert scripts.tmux_target("ab") == "=banger-ab:"  # '=': no prefix matching


@pytest.mark.parametrize(
    "root", ["relative", "/a b", "/a'b", "/a\nb", "/a/../b", "/a/", "/$x", "/a;b", ""]
)
def test_layout_paths_must_be_plain(root: str) -> None:
    with pytest.raises(InvalidArgument, match="root: not a plain absolute path"):
        GuestLayout(root=root)
    with pytest.raises(InvalidArgument, match="socket: not a plain absolute path"):
        GuestLayout(socket=root)


def test_default_layout_and_session_dir() -> None:
    layout = GuestLayout()
    assert (layout.root, layout.socket) == ("/root/.banger/sessions", "/run/banger/tmux.sock")
    assert layout.dir("agent") == "/root/.banger/sessions/agent"
    with pytest.raises(InvalidArgument):
        layout.dir("../etc")


def test_stop_argv_normalises_signals_and_bounds_the_timeout() -> None:
    argv = scripts.stop_argv(LAYOUT, "x", "sigint", 2.5)
    # one exec: STOP, then LIST for the session (no second round trip after a stop)
    assert argv[2:6] == [scripts.STOP_THEN_LIST, "banger-session", scripts.STOP, scripts.LIST]
    assert argv[6:] == [
        f"{LAYOUT.root}/x", "INT", "2.5", LAYOUT.socket, "=banger-x:", LAYOUT.root, "x",
    ]  # fmt: skip
    assert scripts.stop_argv(LAYOUT, "x", "TERM", 10)[8] == "10"
    with pytest.raises(InvalidArgument, match="signal: not supported: 'STOP'"):
        scripts.stop_argv(LAYOUT, "x", "STOP", 1)
    with pytest.raises(InvalidArgument, match="signal: not supported"):
        scripts.stop_argv(LAYOUT, "x", "TERM; reboot", 1)
    for bad in (0, -1, 0.01, 3601):
        with pytest.raises(InvalidArgument, match="timeout: must be between"):
            scripts.stop_argv(LAYOUT, "x", "TERM", bad)


def test_other_argv_builders() -> None:
    assert scripts.logs_argv(LAYOUT, "x", 5)[4:] == [f"{LAYOUT.root}/x", "5"]
    assert scripts.logs_argv(LAYOUT, "x")[4:] == [f"{LAYOUT.root}/x", ""]
    assert scripts.follow_argv(LAYOUT, "x", 12)[4:] == [f"{LAYOUT.root}/x", "12"]
    assert scripts.send_argv(LAYOUT, "x", "hi $x", True)[4:] == [
        f"{LAYOUT.root}/x",
        LAYOUT.socket,
        "=banger-x:",
        "hi $x",
        "1",
    ]
    assert scripts.list_argv(LAYOUT)[4:] == [LAYOUT.root, LAYOUT.socket, ""]
    with pytest.raises(InvalidArgument, match="tail: must be 0 or more"):
        scripts.logs_argv(LAYOUT, "x", -1)
    with pytest.raises(InvalidArgument, match="offset: must be 0 or more"):
        scripts.follow_argv(LAYOUT, "x", -1)
    with pytest.raises(InvalidArgument, match="text: cannot contain NUL"):
        scripts.send_argv(LAYOUT, "x", "a\0", False)
