"""The re-identification of a restored guest: what reaches the guest, validated first.

The script itself runs in a real guest (tests/e2e/test_snapshot_e2e.py); here the
argv it is run with: values only as positional arguments, each checked.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from banger.daemon.vms.reident import (
    RENAME_SCRIPT,
    SCRIPT,
    Identity,
    check_renamed,
    rename_argv,
)
from banger.errors import BangerError, InvalidArgument

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
