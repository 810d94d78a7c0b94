"""``banger workspace``: repository in, branch out (placeholders until workspaces land)."""

from __future__ import annotations

import click

from banger.cli.placeholder import add_placeholders


@click.group(name="workspace")
def workspace() -> None:
    """Copy a repository into a VM and export the work as a git branch."""


add_placeholders(
    workspace,
    [
        ("push", "Copy a repository into a VM"),
        ("export", "Export the VM's work as a git branch"),
    ],
)
