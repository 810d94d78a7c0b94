"""``banger vm fork SRC [-n N] [--name PREFIX]`` (put on the ``vm`` group by :func:`register`).

The daemon does the work (:mod:`banger.daemon.vms.fork`); this follows its
progress and prints the children (``--json``: the children's ``vm show``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import print_json, print_table
from banger.cli.progress import follow
from banger.cli.state import CliState, get_state, json_option

if TYPE_CHECKING:
    from banger.api_models import VMDetail


@click.command(name="fork")
@click.argument("source")
@click.option("-n", "count", type=int, default=1, show_default=True,
              help="How many children (at most 16).")  # fmt: skip
@click.option("--name", "prefix", help="Children are named PREFIX-1..N (default SOURCE-fork).")
@json_option
def fork(source: str, count: int, prefix: str | None) -> None:
    """Copy a running VM N times: same processes and files, new names and addresses.

    SOURCE pauses briefly while its memory is saved and its disks copied, then
    runs on; each child is restored from that state and re-identified. If one
    child fails, the children already made are removed.
    """
    state = get_state()
    started = state.call(lambda c: c.fork_vm(source, count, prefix))
    follow(state, started.operation)
    children = [_show(state, name) for name in started.children]
    if state.json:
        print_json(
            {
                "source": source,
                "disk_copies": started.disk_copies,
                "children": [c.model_dump(mode="json") for c in children],
            }
        )
        return
    rows: list[list[Any]] = [[c.name, c.state, c.ip or "-"] for c in children]
    print_table(["NAME", "STATE", "IP"], rows)
    click.echo(f"disks: {started.disk_copies}")


def _show(state: CliState, name: str) -> VMDetail:
    return state.call(lambda c: c.show_vm(name))


def register(group: click.Group) -> None:
    group.add_command(fork)
