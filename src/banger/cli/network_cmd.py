"""``banger system cleanup-network``: remove banger's bridge and NAT when no VM needs them.

The daemon decides and refuses (exit 4, naming the VMs) while a VM is not
stopped; see :mod:`banger.daemon.netcleanup` for why this is a command and
not part of stopping the last VM. A second run has nothing to do and exits 0.
"""

from __future__ import annotations

from typing import Any

import click

from banger.cli.doctor_cmd import root_flag
from banger.cli.output import print_json
from banger.cli.state import get_state


@click.command("cleanup-network")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def cleanup_network(ctx: click.Context, as_json: bool) -> None:
    """Remove banger's bridge, its NAT rules and the nft table once no VM needs them.

    Refused while any VM is running, paused or busy: stop them first. The next
    VM start makes the bridge and NAT again.
    """
    result = get_state().call(lambda c: c.request("POST", "/v1/network/cleanup"))
    if as_json or root_flag(ctx, "json"):
        print_json(result)
        return
    for line in describe(result):
        click.echo(line)


def describe(result: dict[str, Any]) -> list[str]:
    """The removals, one line each; one "nothing to do" line on a repeated run."""
    bridge = result.get("bridge")
    if not result.get("changed"):
        return [f"nothing to do: no bridge {bridge} and no NAT rules for it"]
    lines = []
    if result.get("dns_stopped"):
        lines.append("stopped the VM resolver on the bridge")
    taps = result.get("taps_deleted") or []
    if taps:
        lines.append(f"deleted leftover taps: {', '.join(taps)}")
    if result.get("bridge_deleted"):
        lines.append(f"deleted bridge {bridge}")
    for subnet in result.get("nat_removed") or []:
        lines.append(f"removed NAT for {subnet}")
    if result.get("nat_table_deleted"):
        lines.append("deleted nft table ip banger")
    return lines
