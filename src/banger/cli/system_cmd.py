"""``banger system``: the systemd service install (placeholders until it lands)."""

from __future__ import annotations

import click

from banger.cli.placeholder import add_placeholders


@click.group(name="system")
def system() -> None:
    """Install bangerd and banger-helper as system services."""


add_placeholders(
    system,
    [
        ("install", "Install the systemd units"),
        ("status", "Show the services' status"),
        ("restart", "Restart the services"),
        ("uninstall", "Remove the systemd units"),
    ],
)
