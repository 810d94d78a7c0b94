"""``banger``: the command line (click). Commands are thin; the daemon does the work.

Exit status (documented in the README; :attr:`BangerError.exit_code` carries it):
0 ok, 1 generic failure, 2 bad input or usage, 3 not found, 4 conflict,
5 daemon unavailable, 6 helper error, 7 an external command failed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

import click

from banger import __version__
from banger.cli.output import print_error, print_json
from banger.cli.state import CliState, get_state, json_option


def _vm_group() -> click.Command:
    from banger.cli.cp_cmd import register as register_cp
    from banger.cli.snapshot_cmd import register as register_snapshots
    from banger.cli.vm_cmd import vm
    from banger.cli.vm_control_cmd import register as register_vm_control
    from banger.cli.vm_exec_cmd import register as register_exec
    from banger.cli.vm_fork_cmd import register as register_fork

    if "pause" not in vm.commands:  # register once, however often it is loaded
        register_vm_control(vm)
        register_snapshots(vm)
        register_exec(vm)
        register_cp(vm)
        register_fork(vm)
    return vm


def _from(module: str, attr: str) -> Callable[[], click.Command]:
    def load() -> click.Command:
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command

    return load


def _doctor_command() -> click.Command:
    """`banger doctor` lives in its own module (another area); tolerate its absence."""
    try:
        from banger.cli.doctor_cmd import doctor
    except ModuleNotFoundError as exc:
        if exc.name != "banger.cli.doctor_cmd":
            raise
        from banger.cli.placeholder import placeholder_command

        return placeholder_command("", "doctor", "Check this machine can run banger")
    return doctor


#: Command groups, imported only when named (or when --help lists them): each
#: pulls in its own dependencies, and `banger vm list --json` should not pay
#: for the image, session or system modules (measured by bench/cli_latency).
LAZY_COMMANDS: dict[str, Callable[[], click.Command]] = {
    "config": _from("banger.cli.config_cmd", "config"),
    "doctor": _doctor_command,
    "image": _from("banger.cli.image_cmd", "image"),
    "kernel": _from("banger.cli.kernel_cmd", "kernel"),
    "ops": _from("banger.cli.ops_cmd", "ops"),
    "pool": _from("banger.cli.pool_cmd", "pool"),
    "session": _from("banger.cli.session_cmd", "session"),
    "system": _from("banger.cli.system_cmd", "system"),
    "vm": _vm_group,
    "workspace": _from("banger.cli.workspace_cmd", "workspace"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            self.add_command(LAZY_COMMANDS[cmd_name](), name=cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(name="banger", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "json_output", is_flag=True, help="Machine-readable JSON output.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(__version__, "--version", prog_name="banger", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, json_output: bool, debug: bool) -> None:
    """Disposable Linux microVMs on your workstation."""
    state = ctx.ensure_object(CliState)
    state.json = state.json or json_output
    state.debug = state.debug or debug
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    ctx.call_on_close(state.close)


@cli.command(name="version")
@json_option
def version() -> None:
    """Show the versions of banger, the running daemon, key Python packages and host
    tools (does not start the daemon). Put `banger version --json` in a bug report."""
    from banger import versions
    from banger.errors import DaemonUnavailable

    state = get_state()
    daemon = None
    problem = None
    try:
        daemon = state.client().version()
    except DaemonUnavailable as exc:
        problem = exc.message
    packages, tools = versions.python_packages(), versions.host_tools()
    if state.json:
        print_json(
            {
                "cli": {"version": __version__},
                "daemon": daemon.model_dump(mode="json") if daemon else None,
                "daemon_error": problem,
                "python": versions.python_info(),
                "packages": packages,
                "host_tools": tools,
            }
        )
        return
    click.echo(f"banger  {__version__}")
    if daemon is None:
        click.echo(f"bangerd not running ({problem})")
    else:
        click.echo(
            f"bangerd {daemon.version} (api {daemon.api}, pid {daemon.pid}, uid {daemon.uid}, "
            f"up since {daemon.started_at.astimezone().strftime('%Y-%m-%d %H:%M:%S')})"
        )
    click.echo("python  " + ", ".join(f"{k} {v or 'missing'}" for k, v in packages.items()))
    click.echo("host    " + ", ".join(f"{k} {v['version'] or 'missing'}" for k, v in tools.items()))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry: run the CLI and turn every failure into one line + exit code."""
    state = CliState()
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="banger",
            obj=state,
            standalone_mode=False,
        )
    except click.ClickException as exc:  # usage errors: exit 2
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:
        sys.exit(print_error(exc, debug=state.debug))
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
