"""``banger pool``: pools of ready guests that ``vm run --pool`` / ``vm create --pool`` take.

A pool boots one guest, snapshots it as its template and keeps SIZE guests
restored from it ready; the daemon does all of that in the background
(:mod:`banger.daemon.pools`). These commands only set, show and remove pools;
taking a guest is ``vm create --pool`` (:mod:`banger.cli.pool_flags` checks its flags).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import one_line, print_fields, print_json, print_table
from banger.cli.state import CliState, get_state, json_option

if TYPE_CHECKING:
    from banger.api_models import PoolInfo

#: The most guests one pool keeps ready (PoolSetRequest.size: 0-16).
MAX_SIZE = 16


@click.group(name="pool")
def pool() -> None:
    """Pools of ready guests: `vm run --pool P` takes one instead of booting."""


def _time(info_time: Any) -> str | None:
    return None if info_time is None else info_time.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _state(info: PoolInfo) -> str:
    """The state, with the last fill's error when it failed (one line: it is a table cell)."""
    if info.state == "failed" and info.error:
        return f"failed: {one_line(info.error)}"
    return info.state


def _print_pool(state: CliState, info: PoolInfo) -> None:
    if state.json:
        print_json(info.model_dump(mode="json"))
        return
    print_fields(
        [
            ("name", info.name),
            ("state", info.state),
            ("error", info.error),
            ("image", info.image),
            ("kernel", info.kernel),
            ("init", info.init),
            ("cpus", info.vcpus),
            ("memory", f"{info.memory_mib} MiB"),
            ("ready", f"{len(info.ready)}/{info.size}"),
            ("guests", ", ".join(info.ready) or None),
            ("template", info.template),
            ("created", _time(info.created_at)),
            ("updated", _time(info.updated_at)),
        ]
    )


@pool.command(name="set")
@click.argument("name")
@click.option("--image", help="Image name or id (new pool: the default image).")
@click.option("--kernel", help="Kernel name or id (new pool: the default kernel).")
# A plain int: the daemon's check answers a bad size as one `error: size: …` line,
# as the README promises for bad input (click's range error is a usage block).
@click.option("--size", type=int,
              help=f"Guests to keep ready (0-{MAX_SIZE}; new pool: 1).")  # fmt: skip
@click.option("--cpus", type=int, help="Virtual CPUs of each guest.")
@click.option("--memory", help="Memory of each guest in MiB, or a size like 2G.")
@click.option("--init", type=click.Choice(["systemd", "fast"]), help="Guest init mode.")
@json_option
def set_cmd(
    name: str,
    image: str | None,
    kernel: str | None,
    size: int | None,
    cpus: int | None,
    memory: str | None,
    init: str | None,
) -> None:
    """Create pool NAME or change it; options not given keep their value.

    The pool fills in the background (the first guest boots and becomes the
    template, the others are restored from it): `banger pool list` shows how
    many are ready. A change of image, kernel, CPUs, memory or init replaces
    the template and the ready guests.
    """
    from banger.api_models import PoolSetRequest
    from banger.cli.vm_cmd import memory_mib

    request = PoolSetRequest(
        image=image,
        kernel=kernel,
        size=size,
        vcpus=cpus,
        memory_mib=memory_mib(memory),
        init=init,
    )
    state = get_state()
    _print_pool(state, state.call(lambda c: c.pool_set(name, request)))


@pool.command(name="list")
@json_option
def list_pools() -> None:
    """List pools: their guests' shape, how many are ready, and their state."""
    state = get_state()
    if state.json:  # the daemon's JSON as it came (no models built)
        print_json(state.call(lambda c: c.get_json("/v1/pools")))
        return
    pools = state.call(lambda c: c.pool_list())
    print_table(
        ["NAME", "IMAGE", "CPUS", "MEMORY", "INIT", "READY", "STATE"],
        [
            [
                p.name,
                p.image,
                p.vcpus,
                f"{p.memory_mib}M",
                p.init,
                f"{len(p.ready)}/{p.size}",
                _state(p),
            ]
            for p in pools
        ],
    )


@pool.command(name="show")
@click.argument("name")
@json_option
def show(name: str) -> None:
    """Show one pool: its guests' shape, its template and its ready guests."""
    state = get_state()
    _print_pool(state, state.call(lambda c: c.pool_get(name)))


@pool.command(name="rm")
@click.argument("name")
@json_option
def rm(name: str) -> None:
    """Remove a pool: its ready guests and its template (VMs taken from it stay)."""
    from banger.cli.vm_cmd import run_lifecycle

    run_lifecycle("removed", f"pool {name}", lambda c: c.pool_rm(name))
