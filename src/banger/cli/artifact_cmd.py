"""What ``banger image`` and ``banger kernel`` share: listing, removal, the default.

Images and kernels are both named, stored artifacts with a default and a
"used by" refusal on removal, so their list/rm/default commands differ only
in the client call, the noun and the table columns. Each command module keeps
its own click declarations (help text, argument names) and hands the
behaviour to these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from banger.cli.output import print_json, print_table
from banger.cli.state import CliState, get_state

if TYPE_CHECKING:
    from banger.api_models import ImageInfo, KernelInfo
    from banger.client import BangerClient

Artifact = TypeVar("Artifact", "ImageInfo", "KernelInfo")


def list_artifacts(
    fetch: Callable[[BangerClient], list[Artifact]],
    columns: Sequence[str],
    row: Callable[[Artifact], Sequence[Any]],
) -> None:
    """Print every artifact: as JSON under ``--json``, else one table row each."""
    state = get_state()
    items = state.call(fetch)
    if state.json:
        print_json([i.model_dump(mode="json") for i in items])
        return
    print_table(columns, [row(i) for i in items])


def remove_artifacts(
    noun: str, names: Sequence[str], remove: Callable[[BangerClient, str], Artifact]
) -> None:
    """Remove each named artifact in order (the daemon refuses one a VM uses)."""
    state = get_state()
    removed = []
    for n in names:
        removed.append(state.call(_with_name(remove, n)))
    if state.json:
        print_json([i.model_dump(mode="json") for i in removed])
    else:
        for info in removed:
            click.echo(f"removed {noun} {info.name} ({info.id})")


def show_or_set_default(
    name: str | None,
    *,
    get_default: Callable[[BangerClient], Artifact | None],
    set_default: Callable[[BangerClient, str], Artifact],
    none_yet: str,
    print_info: Callable[[CliState, Artifact], None],
) -> None:
    """Without NAME print the default (or ``none_yet``); with NAME make it the default."""
    state = get_state()
    if name is None:
        info = state.call(get_default)
        if info is None:
            if state.json:
                print_json(None)
            else:
                click.echo(none_yet)
            return
    else:
        info = state.call(_with_name(set_default, name))
    print_info(state, info)


def _with_name(
    fn: Callable[[BangerClient, str], Artifact], name: str
) -> Callable[[BangerClient], Artifact]:
    # A bound closure per name: a lambda inside the caller's loop would capture
    # the loop variable, not its value.
    return lambda client: fn(client, name)
