"""``banger system cleanup-network`` with a real guest, daemon and root helper.

Everything runs in the harness's namespace (no uplink): the bridge, its tap
and the nft table ``ip banger`` exist there only. While the VM runs or is
paused the cleanup is refused (exit 4, one line naming it) and nothing is
removed; once it is stopped the bridge and the table go, a second run has
nothing to do (exit 0), and the next start makes the bridge, NAT and the VM
resolver again.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from banger.errors import Conflict
from tests.e2e.harness import Banger
from tests.support import assert_refusal, needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]

VM = "netc"
BRIDGE = "banger0"  # the config default


def links(b: Banger) -> set[str]:
    out = b.host("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def nft_table(b: Banger) -> str | None:
    listed = b.host("nft", "list", "table", "ip", "banger")
    return listed.stdout if listed.returncode == 0 else None


def cleanup(b: Banger, *args: str, check: bool = True) -> Any:
    return b.banger("system", "cleanup-network", *args, check=check)


def assert_refused(b: Banger, state: str) -> None:
    refused = cleanup(b, check=False)
    first = assert_refusal(
        refused, Conflict.exit_code, "is still needed by", hint="stop them first"
    )
    assert first == f"error: bridge {BRIDGE} is still needed by 1 VM(s): {VM} ({state})"
    assert BRIDGE in links(b) and b.taps() != []
    table = nft_table(b)
    assert table is not None and f"banger-nat {BRIDGE}" in table


def test_cleanup_waits_for_the_last_vm_then_removes_bridge_and_nat(b: Banger) -> None:
    # Nothing made yet in this fresh namespace: nothing to do, and that is success.
    assert cleanup(b).stdout.startswith(f"nothing to do: no bridge {BRIDGE}")

    b.banger("vm", "create", "--name", VM, "--init", "fast", "--start")
    assert_refused(b, "running")
    b.banger("vm", "pause", VM)
    assert_refused(b, "paused")
    b.banger("vm", "resume", VM)
    b.banger("vm", "stop", VM)

    done = json.loads(cleanup(b, "--json").stdout)
    subnet = done["nat_removed"][0]
    assert done == {
        "bridge": BRIDGE,
        "bridge_deleted": True,
        "taps_deleted": [],  # the stop deleted the VM's tap already
        "nat_removed": [subnet],
        "nat_table_deleted": True,
        "dns_stopped": True,
        "changed": True,
    }
    assert BRIDGE not in links(b) and b.taps() == []
    assert nft_table(b) is None
    # ip_forward stays on: other software may rely on it (documented).
    assert b.host("cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"

    again = cleanup(b)
    assert again.returncode == 0
    assert again.stdout.strip() == f"nothing to do: no bridge {BRIDGE} and no NAT rules for it"
    assert json.loads(cleanup(b, "--json").stdout)["changed"] is False

    # The next start makes it all again, the VM resolver (re-bound on the new bridge) too.
    b.banger("vm", "start", VM)
    assert BRIDGE in links(b)
    table = nft_table(b)
    assert table is not None and f"banger-nat {BRIDGE} {subnet}" in table
    ip = json.loads(b.banger("vm", "show", VM, "--json").stdout)["ip"]
    resolved = b.banger("vm", "ssh", VM, "--", "getent", "hosts", f"{VM}.banger").stdout
    assert resolved.split()[0] == ip
    b.banger("vm", "stop", VM)
    b.banger("vm", "rm", VM)
    assert "bridge_deleted" in cleanup(b, "--json").stdout
    assert BRIDGE not in links(b) and nft_table(b) is None
