"""``banger image pull | export | promote``: operations that make or move images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from banger.cli.image_show import print_image
from banger.cli.output import print_json
from banger.cli.state import CliState, get_state, json_option

if TYPE_CHECKING:
    from banger.api_models import Operation
    from banger.client import BangerClient

BUNDLE_PREFIX = "bundle:"


def _run(state: CliState, start: Callable[[BangerClient], Operation]) -> dict[str, Any]:
    """Start an operation, follow it, return the data of its last ``info`` event."""
    from banger.cli.progress import follow

    op = state.call(start)
    follow(state, op)
    data: dict[str, Any] = {}
    for event in state.client().stream_events(op.id):
        if event.kind == "info" and event.data:
            data = dict(event.data)
    return data


def _show_image(state: CliState, data: dict[str, Any]) -> None:
    print_image(state, state.client().show_image(str(data["image"])))


def absolute_bundle_ref(ref: str) -> str:
    """``bundle:x.bundle`` → ``bundle:/cwd/x.bundle``: the daemon's cwd is not ours."""
    if not ref.startswith(BUNDLE_PREFIX):
        return ref
    location = ref.removeprefix(BUNDLE_PREFIX)
    if location.startswith(("http://", "https://")):
        return ref
    return BUNDLE_PREFIX + str(Path(location).absolute())


def absolute_archive_ref(ref: str) -> str:
    for transport in ("oci-archive:", "docker-archive:"):
        if ref.startswith(transport) and not ref.startswith(transport + "/"):
            return transport + str(Path(ref.removeprefix(transport)).absolute())
    return ref


@click.command(name="pull")
@click.argument("ref")
@click.option("--name", help="Image name (default: from the reference or the bundle).")
@json_option
def pull(ref: str, name: str | None) -> None:
    """Pull an OCI image (debian:bookworm, host:5000/x:y, oci-archive:PATH) or bundle:PATH|URL."""
    state = get_state()
    ref = absolute_archive_ref(absolute_bundle_ref(ref))
    _show_image(state, _run(state, lambda c: c.pull_image(ref, name)))


@click.command(name="export")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Bundle file to write.")  # fmt: skip
@json_option
def export(name: str, output: Path) -> None:
    """Write image NAME as a single-file bundle (zstd, sparse-aware, sha256 manifest)."""
    state = get_state()
    target = str(output.absolute())
    data = _run(state, lambda c: c.export_image(name, target))
    if state.json:
        print_json(data)
    else:
        click.echo(f"wrote {data.get('path', output)}")


@click.command(name="promote")
@click.argument("vm")
@click.argument("new_name")
@click.option("--with-work-disk", is_flag=True,
              help="Also keep the VM's work disk (/root) as the image's work seed, minus what "
                   "[[file_sync]] and git identity wrote.")  # fmt: skip
@click.option("--include-synced", is_flag=True,
              help="With --with-work-disk: keep what [[file_sync]] and git identity wrote "
                   "(your credentials) in the image.")  # fmt: skip
@json_option
def promote(vm: str, new_name: str, with_work_disk: bool, include_synced: bool) -> None:
    """Make a stopped VM's root disk (and optionally its work disk) a new image."""
    if include_synced and not with_work_disk:
        raise click.UsageError("--include-synced only applies with --with-work-disk")
    state = get_state()
    promoted = _run(
        state,
        lambda c: c.promote_image(
            vm, new_name, with_work_disk=with_work_disk, include_synced=include_synced
        ),
    )
    _show_image(state, promoted)
