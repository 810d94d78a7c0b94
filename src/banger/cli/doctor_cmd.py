"""``banger doctor``: print the preflight checks as a table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    # rich is imported only when a table is drawn: `banger --help` stays fast.
    from rich.console import Console

    from banger.doctor.model import CheckResult

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def root_flag(ctx: click.Context, name: str) -> bool:
    """A global flag (``--json``, ``--debug``) stored by the root group, if any.

    The root group keeps its flags in ``ctx.obj``, as a mapping or as an
    object with attributes; either works, and so does no root group at all.
    """
    obj = ctx.find_root().obj
    if isinstance(obj, Mapping):
        return bool(obj.get(name, False))
    return bool(getattr(obj, name, False))


def render_table(results: list[CheckResult], console: Console) -> None:
    from rich.table import Table

    table = Table(title="banger doctor", title_justify="left")
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    # fold, not ellipsis: the paths in details and fixes must stay whole.
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for r in results:
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", r.detail, r.fix)
    console.print(table)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("pass", "warn", "fail")}
    console.print(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as a JSON list.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check this host for what banger needs, and say how to fix what is missing.

    Exits with status 1 when a check failed; warnings (a fallback will be used,
    or an optional feature is unavailable) do not fail.
    """
    # the checks (hostinfo, proc, asyncio: ~45 ms) load only when doctor runs, not
    # on every banger start: system_cmd imports this module for root_flag
    from banger.doctor.checks import failed, run_checks
    from banger.paths import Paths

    results = run_checks(Paths.from_env())
    if as_json or root_flag(ctx, "json"):
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        from rich.console import Console

        render_table(results, Console(soft_wrap=False))
    if failed(results):
        ctx.exit(1)
