"""``banger image``: root filesystem images (placeholders until the image service lands)."""

from __future__ import annotations

import click

from banger.cli.placeholder import add_placeholders


@click.group(name="image")
def image() -> None:
    """Root filesystem images (OCI pulls, distro builds)."""


add_placeholders(
    image,
    [
        ("list", "List images"),
        ("pull", "Pull an OCI image and make it bootable"),
        ("build", "Build a distro image"),
        ("rm", "Remove an image"),
    ],
)
