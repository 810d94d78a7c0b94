"""``banger vm run --session NAME -- CMD``: the command as a session, attached at once.

The command runs under tmux in the guest like ``banger session start`` (so it
outlives the terminal and the SSH connection), and this terminal is attached
to it. ``C-b d`` detaches and leaves the session, and so its VM, running;
with ``--rm`` the VM is removed only once the session has ended. Everything
that can be refused without a VM is checked before one is created.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Sequence

import click

from banger.cli.state import CliState
from banger.errors import BangerError, Conflict, InvalidArgument, NotFound


def check_session_run(name: str, command: Sequence[str]) -> None:
    """Before the VM exists: a valid session name, a command, and a terminal to attach."""
    from banger.guest.session_scripts import validate_name

    try:
        validate_name(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"--session: {exc.message}", exc.hint) from None
    if not command:
        raise InvalidArgument(
            "--session: needs a COMMAND after --", hint="e.g. banger vm run --session dev -- bash"
        )
    if not sys.stdin.isatty():
        raise InvalidArgument(
            "--session attaches this terminal, and stdin is not one",
            hint="without one: banger vm create --start, then banger session start VM -- CMD",
        )


def run_as_session(
    state: CliState, vm: str, name: str, command: Sequence[str], cwd: str | None
) -> int:
    """Start ``command`` as session ``name`` in ``vm`` and attach this terminal to it.

    With ``cwd`` (the workspace ``vm run`` wrote before boot), the command
    starts there. Returns the command's exit
    status once it has ended, or 0 when the user detached (it keeps running).
    """
    from banger.cli.session_cmd import attach_session
    from banger.guest.session_scripts import EXIT_NOT_RUNNING

    state.call(lambda c: c.start_session(vm, command, name=name, cwd=cwd))
    try:
        # tmux attach answers EXIT_NOT_RUNNING when the session ended just before it
        attached = attach_session(state, vm, name) != EXIT_NOT_RUNNING
    except Conflict:  # ended before the attach (a quick command): show what it printed
        attached = False
    record = state.call(lambda c: c.show_session(vm, name))
    if record["state"] == "running":
        click.echo(
            f"detached: session {name} keeps running in VM {vm};"
            f" `banger session attach {vm} {name}` returns to it",
            err=True,
        )
        return 0
    if not attached:
        for event in state.client().session_logs(vm, name):
            if event["kind"] == "output":
                sys.stdout.buffer.write(base64.b64decode(event["data"]))
        sys.stdout.buffer.flush()
    status = record["exit_status"]
    ended = f" with status {status}" if status is not None else ""
    click.echo(f"[session {name} {record['state']}{ended}]", err=True)
    return min(status, 255) if isinstance(status, int) else 1


def session_still_runs(state: CliState, vm: str, name: str) -> bool:
    """For ``--rm``: may the session still be running? When in doubt, yes (keep the VM)."""
    try:
        record = state.client().show_session(vm, name)
    except NotFound:  # no such VM or session: it never started, nothing to keep
        return False
    except BangerError:
        return True
    return bool(record["state"] == "running")
