"""Follow an operation's NDJSON events while it runs, showing its stages.

On a terminal: a rich status line with the current stage, and one line per
notable event (notices, warnings, stage changes) above it. Otherwise: plain
lines. Always on stderr, so a command's own output (``vm run -- uname -a``)
stays alone on stdout. With ``--json`` nothing is shown until the result.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from banger.cli.ops_cmd import OperationFailed
from banger.cli.output import one_line

if TYPE_CHECKING:
    from banger.api_models import Operation, OpEvent
    from banger.cli.state import CliState

_SHOWN_KINDS = ("notice", "warning", "progress", "info")


class _Printer:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.notices: set[str] = set()
        self.status = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console

            self.console = Console(stderr=True)
            self.status = self.console.status("starting…")
            self.status.start()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.status is not None:
            self.console.print(text, markup=False, highlight=False)
        else:
            click.echo(text, err=True)

    def stage(self, name: str) -> None:
        if self.status is not None:
            self.status.update(f"{name}…")
        else:
            self.line(f"▸ {name}")

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()


def follow(state: CliState, record: Operation, *, verbose: bool = False) -> Operation:
    """Show ``record``'s progress until it ends; raise OperationFailed if it failed."""
    printer = _Printer(quiet=state.json)
    last: OpEvent | None = None
    try:
        for event in state.client().stream_events(record.id):
            last = event
            if event.kind == "stage" and event.stage:
                printer.stage(event.stage)
            elif event.kind == "notice":
                if event.message not in printer.notices:
                    printer.notices.add(event.message)
                    printer.line(f"note: {one_line(event.message)}")
            elif event.kind == "warning":
                printer.line(f"warning: {one_line(event.message)}")
            elif event.kind in _SHOWN_KINDS and (verbose or event.kind == "progress"):
                printer.line(f"  {one_line(event.message)}")
    finally:
        printer.stop()
    final = state.client().get_op(record.id)
    if final.state not in ("failed", "succeeded"):
        # The stream ended but the op did not (its end could not be recorded, or the
        # daemon is going away): never report that as success.
        raise OperationFailed(
            f"{final.kind} {final.target or ''}: its progress stream ended while it was "
            f"{final.state} (stage {final.stage or '-'})",
            f"see `banger ops show {final.id}` and the daemon log",
            1,
        )
    if final.state != "failed":
        return final
    error = final.error or "no error recorded"
    first, _, rest = error.partition("\n")
    if rest.strip():
        # Console lines of a failed boot: keep their line breaks.
        click.echo(rest.rstrip(), err=True)
    code = last.data.get("exit_code", 1) if last is not None else 1
    raise OperationFailed(
        f"{final.kind} {final.target or ''} failed at stage {final.stage or '-'}: {first}",
        final.hint,
        code if isinstance(code, int) and 0 < code < 126 else 1,
    )
