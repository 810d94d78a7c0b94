"""``banger ops``: operations (long-running daemon work) and their event streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from banger.cli.output import one_line, print_fields, print_json, print_json_line, print_table
from banger.cli.state import CliState, get_state, json_option
from banger.errors import BangerError

if TYPE_CHECKING:
    from banger.api_models import Operation, OpEvent


class OperationFailed(BangerError):
    """A followed operation ended in failure: exit with the code of its error."""

    def __init__(self, message: str, hint: str | None, exit_code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


@click.group(name="ops")
def ops() -> None:
    """Operations: what the daemon is doing or did, stage by stage."""


@ops.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Include finished operations.")
@json_option
def list_ops(show_all: bool) -> None:
    """List running operations (with --all, finished ones too)."""
    state = get_state()
    records = state.call(lambda c: c.list_ops(include_finished=show_all))
    if state.json:
        print_json([r.model_dump(mode="json") for r in records])
        return
    print_table(
        ["ID", "KIND", "TARGET", "STATE", "STAGE", "CREATED"],
        [
            [r.id, r.kind, r.target, r.state, r.stage, r.created_at.strftime("%Y-%m-%d %H:%M:%S")]
            for r in records
        ],
    )


@ops.command(name="show")
@click.argument("op_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Stream its events until it finishes.")
@json_option
def show(op_id: str, follow: bool) -> None:
    """Show operation ID; with --follow, stream its events (exit status = its outcome)."""
    state = get_state()
    record = state.call(lambda c: c.get_op(op_id))
    if follow:
        follow_op(state, record)
        return
    if state.json:
        print_json(record.model_dump(mode="json"))
        return
    print_fields(
        [
            ("id", record.id),
            ("kind", record.kind),
            ("target", record.target),
            ("state", record.state),
            ("stage", record.stage),
            ("error", record.error),
            ("hint", record.hint),
            ("created", record.created_at.isoformat()),
            ("finished", record.finished_at.isoformat() if record.finished_at else None),
        ]
    )


@ops.command(name="selftest")
@click.option("--fail-at", metavar="STAGE", help="Fail on purpose at this stage (diagnostic).")
@click.option("--delay-ms", type=click.IntRange(0, 5000), default=50, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Stream its events until it finishes.")
@json_option
def selftest(fail_at: str | None, delay_ms: int, follow: bool) -> None:
    """Run the daemon's harmless diagnostic operation."""
    state = get_state()
    record = state.call(lambda c: c.selftest(fail_at=fail_at, delay_ms=delay_ms))
    if follow:
        follow_op(state, record)
    elif state.json:
        print_json(record.model_dump(mode="json"))
    else:
        click.echo(record.id)


def follow_op(state: CliState, record: Operation) -> None:
    """Print events as they come; raise OperationFailed if the op fails."""
    last: OpEvent | None = None
    for event in state.client().stream_events(record.id):
        last = event
        if state.json:
            print_json_line(event.model_dump(mode="json"))
        else:
            click.echo(format_event(event))
    final = state.client().get_op(record.id)
    if final.state == "failed":
        code = last.data.get("exit_code", 1) if last is not None else 1
        raise OperationFailed(
            f"operation {final.id} ({final.kind}) failed at stage {final.stage or '-'}: "
            f"{final.error or 'no error recorded'}",
            final.hint,
            code if isinstance(code, int) and 0 < code < 126 else 1,
        )


def format_event(event: OpEvent) -> str:
    clock = event.at.astimezone().strftime("%H:%M:%S")
    if event.kind == "stage":
        return f"{clock} ▸ {event.stage}"
    if event.kind == "succeeded":
        return f"{clock} ✓ succeeded"
    if event.kind == "failed":
        return f"{clock} ✗ failed at {event.stage or '-'}: {one_line(event.message)}"
    return f"{clock}   {event.kind}: {one_line(event.message)}"
