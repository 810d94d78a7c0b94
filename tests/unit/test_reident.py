"""The re-identification of a restored guest: what reaches the guest, validated first.

The script itself runs in a real guest (tests/e2e/test_snapshot_e2e.py); here the
argv it is run with: values only as positional arguments, each checked.
"""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from banger.daemon.vms.reident import SCRIPT, Identity
from banger.errors import InvalidArgument

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
