"""The re-identification of a restored guest: what reaches the guest, validated first.

The script itself runs in a real guest (tests/e2e/test_snapshot_e2e.py); here the
argv it is run with: values only as positional arguments, each checked.
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from banger.daemon.runner import runner_command
from banger.daemon.vms.reident import (
    OLD_AWK,
    RENAME_SCRIPT,
    SCRIPT,
    STALE_SCRIPT,
    Identity,
    StaleReport,
    check_renamed,
    rename_argv,
    report_stale,
)
from banger.errors import BangerError, InvalidArgument
from banger.guest.runner_guest import RUNNER_ARG

NET = ipaddress.IPv4Network("172.30.0.0/24")
GW = ipaddress.IPv4Address("172.30.0.1")


def identity(**overrides: object) -> Identity:
    args: dict[str, object] = {
        "hostname": "clone-1",
        "mac": "52:54:00:12:34:56",
        "ip": ipaddress.IPv4Address("172.30.0.9"),
        "network": NET,
        "gateway": GW,
        "dns": GW,
    }
    args.update(overrides)
    return Identity.new(**args)  # type: ignore[arg-type]


def test_argv_passes_values_as_positional_arguments() -> None:
    ident = identity()
    argv = ident.argv()
    assert argv[:4] == ["/bin/sh", "-c", SCRIPT, "reident"]
    assert argv[4:] == [
        "clone-1", "52:54:00:12:34:56", "172.30.0.9/24", "172.30.0.1", "172.30.0.1",
        ident.machine_id,
    ]  # fmt: skip
    assert len(ident.machine_id) == 32 and int(ident.machine_id, 16) >= 0
    assert identity().machine_id != ident.machine_id  # fresh per VM


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("hostname", "x init=/bin/sh", "hostname"),
        ("hostname", "a;b", "hostname"),
        ("mac", "52:54:00:12:34:56; reboot", "mac"),
        ("mac", "52:54:00:12:34", "mac"),
        ("ip", ipaddress.IPv4Address("10.0.0.5"), "ip"),
    ],
)
def test_bad_values_are_refused_naming_the_field(field: str, value: object, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        identity(**{field: value})


def test_the_script_parses_and_uses_only_its_arguments() -> None:
    """sh -n accepts it; no value is spliced into its text."""
    subprocess.run(["sh", "-n", "-c", SCRIPT], check=True)
    for word in ("clone-1", "172.30", "52:54"):
        assert word not in SCRIPT


def test_rename_argv_passes_the_name_as_an_argument_checked_first() -> None:
    """A pool take's rename: the same argv over a held SSH connection or the agent."""
    argv = rename_argv("taken-1")
    assert argv == ["/bin/sh", "-c", RENAME_SCRIPT, "rename", "taken-1"]
    subprocess.run(["sh", "-n", "-c", RENAME_SCRIPT], check=True)
    for bad in ("a;b", "x y", "-rf", ""):
        with pytest.raises(InvalidArgument, match="hostname"):
            rename_argv(bad)


def test_the_rename_script_sets_what_it_is_given(tmp_path: Path) -> None:
    """Run for real with ``hostname`` and /etc redirected: the name reaches both places."""
    said = tmp_path / "said"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "hostname").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" > {said}\n')
    (fake / "hostname").chmod(0o755)
    script = RENAME_SCRIPT.replace("/etc/hostname", str(tmp_path / "etc-hostname"))
    argv = rename_argv("taken-1")
    argv[2] = script
    env = {"PATH": f"{fake}:/usr/bin:/bin"}
    subprocess.run(argv, check=True, env=env)
    assert said.read_text() == "taken-1\n"
    assert (tmp_path / "etc-hostname").read_text() == "taken-1\n"


def test_a_failed_rename_is_one_line_with_the_guests_last_words() -> None:
    check_renamed("t1", 0, b"", b"")  # success: nothing raised
    with pytest.raises(BangerError) as raised:
        check_renamed("t1", 1, b"", b"sh: 1: hostname: x\nhostname: you must be root\n")
    assert raised.value.message == (
        "setting the guest's hostname to t1 failed (exit 1): hostname: you must be root"
    )
    with pytest.raises(BangerError, match=r"\(exit 127\): no output"):
        check_renamed("t1", 127, b"", b"")


# -- the source's stale held-connection processes (issue #18 item 5) -------------------

SHELLS = [sh for sh in ("/bin/sh", shutil.which("busybox")) if sh is not None]
OLD = "09001EAC"  # 172.30.0.9 as /proc/net/tcp writes it on a little-endian machine
TCP_HEADER = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    "   uid  timeout inode\n"
)


def tcp_row(local: str, state: str, inode: int) -> str:
    return (
        f"   0: {local}:0016 0100300A:D2F0 {state} 00000000:00000000 02:000A7E3B "
        f"00000000     0        0 {inode} 1 0000000000000000 20 4 30 10 -1\n"
    )


def shell_argv(shell: str, script: str) -> list[str]:
    return [shell, "sh", "-c", script] if shell.endswith("busybox") else [shell, "-c", script]


def tools_path(shell: str, tmp_path: Path) -> str:
    """Under busybox, its own awk, tr, ls and sleep too (an Alpine guest's)."""
    if not shell.endswith("busybox"):
        return "/usr/bin:/bin"
    bb = tmp_path / "bb"
    bb.mkdir()
    for tool in ("awk", "tr", "ls", "sleep"):
        (bb / tool).symlink_to(shell)
    return f"{bb}:/usr/bin:/bin"


@pytest.mark.parametrize("shell", SHELLS)
def test_old_awk_gives_eth0s_addresses_as_proc_net_tcp_writes_them(
    shell: str, tmp_path: Path
) -> None:
    shown = (
        "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP\n"
        "    inet 172.30.0.9/24 brd 172.30.0.255 scope global eth0\n"
        "       valid_lft forever preferred_lft forever\n"
        "    inet 10.1.2.3/8 scope global secondary eth0\n"
    )
    env = {"PATH": tools_path(shell, tmp_path)}
    out = subprocess.run(
        shell_argv(shell, f"awk '{OLD_AWK}'"), input=shown, capture_output=True, text=True,
        env=env, check=True,
    ).stdout  # fmt: skip
    assert out == f" {OLD} 0302010A"


@pytest.mark.parametrize("shell", SHELLS)
def test_the_stale_script_ends_the_old_connections_sshd_and_the_runner_only(
    shell: str, tmp_path: Path
) -> None:
    """Run for real over a made-up /proc whose pids are live ``sleep`` processes: the
    sshd processes serving a connection to the old address (IPv4 or v4-mapped) get
    TERM, the marked runner (which here never ends by itself) KILL after its wait;
    a loopback login, listeners, another address, a non-sshd program on the old
    address and a plain python3 are left alone."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(
        TCP_HEADER
        + tcp_row(OLD, "01", 1001)  # the held connection
        + tcp_row("0100007F", "01", 1002)  # ssh localhost, in the guest
        + tcp_row("00000000", "0A", 1003)  # sshd's listener
        + tcp_row(OLD, "01", 1004)  # curl's download, to the old address
        + tcp_row(OLD, "0A", 1006)  # a listener bound to the old address
        + tcp_row("0A001EAC", "01", 1007)  # another address
        + tcp_row(OLD, "06", 0)  # TIME_WAIT: no inode
    )
    (proc / "net" / "tcp6").write_text(
        TCP_HEADER + tcp_row("0000000000000000FFFF0000" + OLD, "01", 1005)
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def fake(name: str, comm: str, argv: list[str], sockets: list[int]) -> None:
        p = subprocess.Popen(["sleep", "1000"])
        procs[name] = p
        d = proc / str(p.pid)
        (d / "fd").mkdir(parents=True)
        (d / "comm").write_text(comm + "\n")
        (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        (d / "fd" / "0").symlink_to("/dev/null")
        for n, inode in enumerate(sockets, 3):
            (d / "fd" / str(n)).symlink_to(f"socket:[{inode}]")

    try:
        fake("monitor", "sshd", ["sshd: root@notty"], [1001])
        fake("session", "sshd", ["sshd: root@notty"], [7, 1001])
        fake("mapped", "sshd-session", ["sshd-session: root@notty"], [1005])
        fake("runner", "python3", ["python3", "-I", "-S", "-c", "SOURCE", RUNNER_ARG], [])
        fake("loopback", "sshd", ["sshd: root@pts/0"], [1002])
        fake("listener", "sshd", ["sshd: /usr/sbin/sshd -D"], [1003, 1006])
        fake("other", "sshd", ["sshd: root@notty"], [1007])
        fake("curl", "curl", ["curl", "-O", "x"], [1004])
        fake("plain", "python3", ["python3", "-c", "import time"], [])
        script = f'old=" {OLD}"\n' + STALE_SCRIPT.replace("/proc/", f"{proc}/")
        env = {"PATH": tools_path(shell, tmp_path)}
        out = subprocess.run(
            shell_argv(shell, script), capture_output=True, text=True, env=env, timeout=60,
            check=True,
        ).stdout  # fmt: skip
        report = report_stale("c1", out.encode())
        pid = {name: str(p.pid) for name, p in procs.items()}
        assert report is not None, out
        assert sorted(report.sshd) == sorted([pid["monitor"], pid["session"], pid["mapped"]])
        assert report.runner == [pid["runner"]] and report.killed == [pid["runner"]], out
        for name in ("monitor", "session", "mapped"):
            assert procs[name].wait(timeout=10) == -signal.SIGTERM, name
        assert procs["runner"].wait(timeout=10) == -signal.SIGKILL
        for name in ("loopback", "listener", "other", "curl", "plain"):
            assert procs[name].poll() is None, name
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_without_sshd_to_end_a_runner_is_killed_at_once(tmp_path: Path) -> None:
    """No old connection found (e.g. no awk): nothing will close the runner's channel,
    so it is killed without the wait."""
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    runner = subprocess.Popen(["sleep", "1000"])
    try:
        d = proc / str(runner.pid)
        d.mkdir()
        (d / "comm").write_text("python3\n")
        (d / "cmdline").write_bytes(b"python3\0-I\0-S\0-c\0SOURCE\0" + RUNNER_ARG.encode() + b"\0")
        script = 'old=" 09001EAC"\n' + STALE_SCRIPT.replace("/proc/", f"{proc}/")
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert out.stdout == f"stale sshd: runner: {runner.pid} killed: {runner.pid}\n"
        assert runner.wait(timeout=10) == -signal.SIGKILL
    finally:
        runner.kill()
        runner.wait()


def test_the_stale_report_is_parsed_and_a_missing_one_is_none() -> None:
    said = b"ignored\nstale sshd: 12 13 runner: 40 killed:\n"
    assert report_stale("c1", said) == StaleReport(["12", "13"], ["40"], [])
    assert report_stale("c1", b"") is None
    assert report_stale("c1", b"stale sshd: ; rm -rf\n") is None


def test_the_runner_is_started_with_its_mark_as_its_last_argument() -> None:
    """What the stale script looks for: ``python3 -I -S -c SOURCE banger-runner``."""
    argv = shlex.split(runner_command())
    assert argv[:5] == ["exec", "python3", "-I", "-S", "-c"] and argv[6:] == [RUNNER_ARG]
