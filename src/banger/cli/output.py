"""How the CLI prints: JSON for scripts, rich tables for people, errors on stderr."""

from __future__ import annotations

import io
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from banger.errors import BangerError

#: Table width off a terminal: no row is folded (a line is as long as its cells).
PIPE_WIDTH = 100_000


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def print_json_line(data: Any) -> None:
    click.echo(json.dumps(data, default=str))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    # Into a pipe or a file rich would assume 80 columns and fold long cells onto
    # extra lines; there, every row is one line, as wide as it needs.
    if sys.stdout.isatty():
        Console(soft_wrap=False).print(table)
        return
    out = io.StringIO()
    Console(file=out, soft_wrap=False, width=PIPE_WIDTH).print(table)
    for line in out.getvalue().splitlines():
        click.echo(line.rstrip())


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {'-' if value is None else value}")


def print_error(exc: BaseException, *, debug: bool) -> int:
    """``error: <one line>`` and ``hint: …`` on stderr; the exit code to use."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, BangerError):
        message, hint, code = exc.message, exc.hint, exc.exit_code
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
        hint = None if debug else "this is a bug in banger; rerun with --debug for the traceback"
        code = 1
    click.echo(f"error: {one_line(message)}", err=True)
    if hint:
        click.echo(f"hint: {one_line(hint)}", err=True)
    return code


def one_line(text: str) -> str:
    return " ".join(text.split())
