"""``banger vm pause|resume NAME`` (registered on the ``vm`` group by :func:`register`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from banger.cli.output import print_json
from banger.cli.state import get_state, json_option

if TYPE_CHECKING:
    from banger.api_models import Operation
    from banger.client import BangerClient


def _lifecycle(verb: str, name: str, call: Callable[[BangerClient], Operation]) -> None:
    from banger.cli.progress import follow

    state = get_state()
    final = follow(state, state.call(call))
    if state.json:
        print_json(final.model_dump(mode="json"))
    else:
        click.echo(f"{name}: {verb}")


@click.command(name="pause")
@click.argument("name")
@json_option
def pause(name: str) -> None:
    """Pause a running VM: vCPUs stop, memory and network stay (resume continues it)."""
    _lifecycle("paused", name, lambda c: c.pause_vm(name))


@click.command(name="resume")
@click.argument("name")
@json_option
def resume(name: str) -> None:
    """Resume a paused VM."""
    _lifecycle("running", name, lambda c: c.resume_vm(name))


def register(group: click.Group) -> None:
    group.add_command(pause)
    group.add_command(resume)
