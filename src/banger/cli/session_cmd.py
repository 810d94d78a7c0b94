"""``banger session``: long-running commands in a VM under tmux.

The daemon keeps the records and talks to the guest; ``attach`` asks the
daemon whether the session runs, then runs the system ``ssh -t`` with ``tmux
attach`` itself, so the terminal (modes, window size, resize) is ssh's and
tmux's own: ``C-b d`` detaches and leaves the session running.

The API calls are :class:`~banger.client.BangerClient` methods; this module
only parses arguments and prints.
"""

from __future__ import annotations

import base64
import sys
from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import print_json, print_json_line, print_table
from banger.cli.state import CliState, get_state, json_option
from banger.errors import InvalidArgument

if TYPE_CHECKING:
    from banger.client import BangerClient


@click.group(name="session")
def session() -> None:
    """Long-running sessions (tmux) inside a VM: start, list, attach, logs, send, stop."""


def _env(pairs: tuple[str, ...]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--env: expected KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def _when(value: str | None) -> str:
    return "" if not value else value.replace("T", " ")[:19]


def _print_sessions(state: CliState, sessions: list[dict[str, Any]]) -> None:
    if state.json:
        print_json(sessions)
        return
    print_table(
        ["VM", "NAME", "STATE", "EXIT", "STARTED", "ENDED", "COMMAND"],
        [
            [
                s["vm"],
                s["name"],
                s["state"],
                "" if s["exit_status"] is None else s["exit_status"],
                _when(s["started_at"]),
                _when(s["ended_at"]),
                " ".join(s["command"])[:60],
            ]
            for s in sessions
        ],
    )


@session.command(name="start", context_settings={"ignore_unknown_options": True})
@click.argument("vm")
@click.option("--name", "-n", help="Session name (unique in the VM); generated if omitted.")
@click.option("--cwd", help="Guest working directory (default: the image's WorkingDir, or /root).")
@click.option("--env", "-e", "env", multiple=True, help="KEY=VALUE for the command (repeat).")
@click.option("--attach", "-a", is_flag=True, help="Attach to it at once.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@json_option
def start(
    vm: str,
    name: str | None,
    cwd: str | None,
    env: tuple[str, ...],
    attach: bool,
    command: tuple[str, ...],
) -> int:
    """Start COMMAND (after --) detached under tmux in VM; it outlives this shell."""
    state = get_state()
    variables = _env(env)
    created = state.call(lambda c: c.start_session(vm, command, name=name, cwd=cwd, env=variables))
    if attach:
        return attach_session(state, vm, created["name"])
    if state.json:
        print_json(created)
    else:
        click.echo(created["name"])
    return 0


@session.command(name="list")
@click.argument("vm", required=False)
@json_option
def list_sessions(vm: str | None) -> None:
    """List sessions (of one VM, or all), checked against the guests."""
    state = get_state()
    _print_sessions(state, state.call(lambda c: c.list_sessions(vm)))


def attach_session(state: CliState, vm: str, name: str) -> int:
    """Attach this terminal to session ``name`` of ``vm``; ssh's exit status (0 on detach)."""
    from banger.cli.sshexec import argv_for, run_ssh
    from banger.guest.sessions import attach_argv

    if not sys.stdin.isatty():
        raise InvalidArgument(
            "attach needs a terminal", hint=f"banger session logs -f {vm} {name} works without one"
        )
    ssh = state.call(lambda c: c.session_ssh_info(vm, name))
    return run_ssh(attach_argv(argv_for(ssh, None, tty=True), name))


@session.command(name="attach")
@click.argument("vm")
@click.argument("name")
@json_option
def attach(vm: str, name: str) -> int:
    """Attach this terminal to a session; C-b d detaches and leaves it running.

    With --json, the session's record is printed once the terminal is given back.
    """
    state = get_state()
    status = attach_session(state, vm, name)
    if state.json:
        print_json({**state.call(lambda c: c.show_session(vm, name)), "attach_status": status})
    return status


@session.command(name="logs")
@click.argument("vm")
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the session ends.")
@click.option("--tail", "-n", type=click.IntRange(min=0), help="Only the last N lines first.")
@click.option(
    "--plain/--raw",
    default=None,
    help="Plain text: no terminal escapes, \\n line ends (default when stdout is not a"
    " terminal) / exactly what the terminal got.",
)
@json_option
def logs(vm: str, name: str, follow: bool, tail: int | None, plain: bool | None) -> int:
    """Print a session's terminal output; with -f, exit with the session's status.

    Works while the VM is stopped too (the log is on its work disk).
    """
    from banger.cli.plain import PlainFilter

    state = get_state()
    state.call(lambda c: c.version())  # a stream starts lazily: start the daemon first
    status = 0
    text = PlainFilter() if (plain if plain is not None else not sys.stdout.isatty()) else None
    for event in state.client().session_logs(vm, name, follow=follow, tail=tail):
        if state.json:
            print_json_line(event)
        if event["kind"] == "output" and not state.json:
            data = base64.b64decode(event["data"])
            sys.stdout.buffer.write(text.feed(data) if text is not None else data)
            sys.stdout.buffer.flush()
        elif event["kind"] == "end" and follow:
            session_data = event["session"]
            exit_status = session_data.get("exit_status")
            status = exit_status if isinstance(exit_status, int) else 1
            if not state.json:
                click.echo(
                    f"[session {name} {session_data['state']}"
                    + (f" with status {exit_status}]" if exit_status is not None else "]"),
                    err=True,
                )
    if text is not None:
        sys.stdout.buffer.write(text.close())
        sys.stdout.buffer.flush()
    return min(status, 255)


@session.command(name="send")
@click.argument("vm")
@click.argument("name")
@click.argument("text")
@click.option("--enter", is_flag=True, help="Press Enter after the text.")
@json_option
def send(vm: str, name: str, text: str, enter: bool) -> None:
    """Type TEXT into a session's terminal."""
    state = get_state()
    state.call(lambda c: c.send_to_session(vm, name, text, enter=enter))
    if state.json:
        print_json({"vm": vm, "session": name, "sent": text, "enter": enter})


@session.command(name="stop")
@click.argument("vm")
@click.argument("name")
@click.option("--signal", "-s", "signal", default="TERM", show_default=True)
@click.option("--timeout", "-t", type=float, default=10.0, show_default=True,
              help="Seconds to wait before SIGKILL.")  # fmt: skip
@json_option
def stop(vm: str, name: str, signal: str, timeout: float) -> None:
    """Signal a session's command, wait, then kill it."""
    state = get_state()
    result = state.call(lambda c: c.stop_session(vm, name, signal=signal, timeout=timeout))
    if state.json:
        print_json(result)
        return
    status = result["session"]["exit_status"]
    click.echo(
        f"{name}: {result['outcome']}" + (f" (status {status})" if status is not None else "")
    )


@session.command(name="rm")
@click.argument("vm")
@click.argument("names", nargs=-1, required=True)
def rm(vm: str, names: tuple[str, ...]) -> None:
    """Forget finished sessions (record and guest log), freeing their names."""
    state = get_state()
    for name in names:

        def remove(c: BangerClient, name: str = name) -> None:
            c.remove_session(vm, name)

        state.call(remove)
