"""``banger image``: root filesystem images."""

from __future__ import annotations

from pathlib import Path

import click

from banger.cli.artifact_cmd import list_artifacts, remove_artifacts, show_or_set_default
from banger.cli.image_show import MIB, print_image
from banger.cli.image_transfer import export, promote, pull
from banger.cli.state import get_state, json_option


@click.group(name="image")
def image() -> None:
    """Root filesystem images (distro builds, registered images)."""


@image.command(name="list")
@json_option
def list_images() -> None:
    """List images."""
    list_artifacts(
        lambda c: c.list_images(),
        ["NAME", "ID", "SOURCE", "SIZE", "CREATED", "DEFAULT", "USED BY"],
        lambda i: [
            i.name,
            i.id,
            i.source,
            f"{i.size // MIB}M",
            i.created_at.strftime("%Y-%m-%d %H:%M") if i.created_at else "",
            "*" if i.default else "",
            ", ".join(i.used_by),
        ],
    )


@image.command(name="show")
@click.argument("name")
@json_option
def show(name: str) -> None:
    """Show one image."""
    state = get_state()
    print_image(state, state.call(lambda c: c.show_image(name)))


@image.command(name="register")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Image name (default: from image.json or the file name).")
@json_option
def register(path: Path, name: str | None) -> None:
    """Register a banger image directory or a banger-finalized ext4 file."""
    state = get_state()
    print_image(state, state.call(lambda c: c.register_image(str(path.absolute()), name)))


@image.command(name="build")
@click.argument("ref", default="debian:bookworm")
@click.option("--name", help="Image name (default: debian-<suite>).")
@json_option
def build(ref: str, name: str | None) -> None:
    """Build a distro image (debian:<suite>) through the root helper."""
    from banger.cli.progress import follow

    state = get_state()
    op = state.call(lambda c: c.build_image(ref, name))
    follow(state, op)
    final = name or ref.replace(":", "-")
    print_image(state, state.client().show_image(final))


@image.command(name="rm")
@click.argument("names", nargs=-1, required=True)
@json_option
def rm(names: tuple[str, ...]) -> None:
    """Remove images (refused while a VM uses one)."""
    remove_artifacts("image", names, lambda c, n: c.remove_image(n))


@image.command(name="prune")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_option
def prune(dry_run: bool) -> None:
    """Remove cached OCI blobs no image needs (refused pulls, removed images)."""
    from banger.cli.output import print_json

    state = get_state()
    result = state.call(lambda c: c.prune_images(dry_run=dry_run))
    if state.json:
        print_json(result.model_dump(mode="json"))
        return
    size = f"{result.bytes / MIB:.1f} MiB"
    if dry_run:
        for blob in result.removed:
            click.echo(f"would remove {blob.digest} ({blob.size} bytes)")
        click.echo(f"would remove {result.blobs} blobs ({size}) from the OCI cache")
    else:
        click.echo(f"removed {result.blobs} blobs from the OCI cache, {result.freed / MIB:.1f}"
                   " MiB freed")  # fmt: skip
    click.echo(f"kept {result.kept_blobs} blobs ({result.kept_bytes / MIB:.1f} MiB) that"
               f" {result.images} pulled images need")  # fmt: skip


@image.command(name="default")
@click.argument("name", required=False)
@json_option
def default(name: str | None) -> None:
    """Show the default image, or make NAME the default."""
    show_or_set_default(
        name,
        get_default=lambda c: c.default_image(),
        set_default=lambda c, n: c.set_default_image(n),
        none_yet="no default image yet (the first `vm run` builds debian:bookworm)",
        print_info=print_image,
    )


image.add_command(pull)
image.add_command(export)
image.add_command(promote)
