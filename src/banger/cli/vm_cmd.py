"""``banger vm``: microVMs (``list`` works now; the lifecycle commands land later)."""

from __future__ import annotations

import click

from banger.cli.output import print_json, print_table
from banger.cli.placeholder import add_placeholders
from banger.cli.state import get_state, json_option


@click.group(name="vm")
def vm() -> None:
    """Create, run and manage microVMs."""


@vm.command(name="list")
@json_option
def list_vms() -> None:
    """List VMs."""
    state = get_state()
    vms = state.call(lambda c: c.list_vms())
    if state.json:
        print_json([v.model_dump(mode="json") for v in vms])
        return
    print_table(
        ["ID", "NAME", "STATE", "IMAGE", "IP", "CREATED"],
        [
            [
                v.id,
                v.name,
                v.state,
                v.image,
                v.ip,
                v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else None,
            ]
            for v in vms
        ],
    )


add_placeholders(
    vm,
    [
        ("create", "Create a VM"),
        ("start", "Start a VM"),
        ("stop", "Stop a VM"),
        ("rm", "Delete a VM"),
        ("ssh", "Open a shell in a VM"),
    ],
)
