from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.guest.ssh import SSHTarget, console_tail, remote_command, ssh_argv

T = SSHTarget("172.30.0.2", Path("/s/ssh/known_hosts"), Path("/s/ssh/id_ed25519"))


def test_remote_command_for_argv_round_trips_through_a_real_shell() -> None:
    args = ["printf", "%s\n", "it's", '"q"', "$HOME", "a\nb", "ünï ☃", "", "; rm -rf /"]
    text = remote_command(args)
    out = subprocess.run(["sh", "-c", text], capture_output=True, check=True).stdout
    assert out.decode() == "".join(f"{a}\n" for a in args[2:])


def test_remote_command_env_and_cwd(tmp_path: Path) -> None:
    text = remote_command(
        ["sh", "-c", 'printf "%s|%s" "$PWD" "$X"'], env={"X": "a b'$c\n"}, cwd=str(tmp_path)
    )
    out = subprocess.run(["sh", "-c", text], capture_output=True, check=True).stdout
    assert out.decode() == f"{tmp_path}|a b'$c\n"


def test_remote_command_string_is_shell() -> None:
    assert remote_command("echo $HOME | wc -c") == "echo $HOME | wc -c"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"command": []}, "command"), ({"command": ["true"], "env": {"A B": "x"}}, "env")],
)
def test_remote_command_refuses(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{field}:"):
        remote_command(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"host": "-oProxyCommand=x"}, "host"), ({"host": "a b"}, "host"), ({"port": 0}, "port")],
)
def test_target_validation(changes: dict[str, object], field: str) -> None:
    args = {"host": "10.0.0.2", "known_hosts": Path("/k"), "client_key": Path("/i"), **changes}
    with pytest.raises(InvalidArgument, match=f"^{field}:"):
        SSHTarget(**args)  # type: ignore[arg-type]


def test_ssh_argv_batch() -> None:
    argv = ssh_argv(T, ["uname", "-a"])
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    joined = " ".join(argv)
    for option in (
        "StrictHostKeyChecking=yes",
        'UserKnownHostsFile="/s/ssh/known_hosts"',
        "GlobalKnownHostsFile=/dev/null",
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        'IdentityFile="/s/ssh/id_ed25519"',
        "BatchMode=yes",
    ):
        assert f"-o {option}" in joined
    assert "-T" in argv and "-t" not in argv
    assert argv[-3:] == ["--", "172.30.0.2", "exec uname -a"]
    assert argv[argv.index("-l") + 1] == "root" and argv[argv.index("-p") + 1] == "22"


def test_ssh_argv_interactive_has_tty_and_no_batch_mode() -> None:
    argv = ssh_argv(T, tty=True)
    assert "-t" in argv and "BatchMode=yes" not in argv
    assert argv[-2:] == ["--", "172.30.0.2"]


def test_ssh_argv_escapes_percent_and_spaces() -> None:
    target = SSHTarget("h", Path("/a b/%d/kh"), Path("/k"))
    assert '-o UserKnownHostsFile="/a b/%%d/kh"' in shlex.join(ssh_argv(target)).replace("'", "")


def test_console_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(
        b"".join(f"line {i}\r\n".encode() for i in range(100)) + b"\x1b[0;32m OK \x1b[0m\n\n"
    )
    tail = console_tail(log, 5).splitlines()
    assert tail == ["line 96", "line 97", "line 98", "line 99", " OK"]
    assert console_tail(tmp_path / "missing") == ""
    assert console_tail(None) == ""
