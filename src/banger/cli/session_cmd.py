"""``banger session``: tmux sessions in a VM (placeholders until sessions land)."""

from __future__ import annotations

import click

from banger.cli.placeholder import add_placeholders


@click.group(name="session")
def session() -> None:
    """Long-running sessions (tmux) inside a VM."""


add_placeholders(
    session,
    [
        ("list", "List sessions"),
        ("new", "Start a session in a VM"),
        ("attach", "Attach to a session"),
        ("kill", "End a session"),
    ],
)
