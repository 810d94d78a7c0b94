"""``banger kernel``: guest kernels (placeholders until the kernel service lands)."""

from __future__ import annotations

import click

from banger.cli.placeholder import add_placeholders


@click.group(name="kernel")
def kernel() -> None:
    """Guest kernels and their initramfs."""


add_placeholders(
    kernel,
    [
        ("list", "List kernels"),
        ("fetch", "Download a distro kernel"),
        ("add", "Register a local kernel image"),
        ("rm", "Remove a kernel"),
    ],
)
