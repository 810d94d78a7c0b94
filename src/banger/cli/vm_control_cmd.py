"""``banger vm pause|resume NAME`` (registered on the ``vm`` group by :func:`register`)."""

from __future__ import annotations

import click

from banger.cli.state import json_option
from banger.cli.vm_cmd import run_lifecycle


@click.command(name="pause")
@click.argument("name")
@json_option
def pause(name: str) -> None:
    """Pause a running VM: vCPUs stop, memory and network stay (resume continues it)."""
    run_lifecycle("paused", name, lambda c: c.pause_vm(name))


@click.command(name="resume")
@click.argument("name")
@json_option
def resume(name: str) -> None:
    """Resume a paused VM."""
    run_lifecycle("running", name, lambda c: c.resume_vm(name))


def register(group: click.Group) -> None:
    group.add_command(pause)
    group.add_command(resume)
