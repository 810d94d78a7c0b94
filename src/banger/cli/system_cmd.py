"""``banger system``: install bangerd and banger-helper as systemd services; network cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import click

from banger.cli.doctor_cmd import root_flag
from banger.cli.network_cmd import cleanup_network
from banger.paths import SYSTEM_RUNTIME_DIR

_prefix_option = click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write under this root directory instead of / and leave systemctl alone (packaging).",
)


@click.group(name="system")
def system() -> None:
    """Install bangerd and banger-helper as system services; clean up banger's network."""


system.add_command(cleanup_network)


@system.command("install")
@click.option("--owner", help="User the daemon runs as (default: the user who ran sudo).")
@_prefix_option
@click.option(
    "--runtime-dir",
    type=click.Path(path_type=Path),
    default=SYSTEM_RUNTIME_DIR,
    show_default=True,
    help="Socket directory, under /run (the helper log goes to /var/log/<same name>).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def install_cmd(
    ctx: click.Context, owner: str | None, prefix: Path | None, runtime_dir: Path, as_json: bool
) -> None:
    """Write the two units and /etc/banger/install.toml, then enable and start them."""
    from banger.system.install import install, resolve_owner

    result = install(
        resolve_owner(owner), prefix.absolute() if prefix else None, runtime_dir=runtime_dir
    )
    if as_json or root_flag(ctx, "json"):
        click.echo(
            json.dumps(
                {
                    "owner": result.metadata.owner,
                    "version": result.metadata.version,
                    "written": [str(p) for p in result.written],
                    "unchanged": [str(p) for p in result.unchanged],
                    "started": result.systemd,
                },
                indent=2,
            )
        )
        return
    for path in result.written:
        click.echo(f"wrote {path}")
    if not result.written:
        click.echo("already installed: nothing changed")
    if result.systemd:
        click.echo(f"bangerd and banger-helper are running for {result.metadata.owner}")
    else:
        click.echo("files only (--prefix): enable the units with systemctl on the target system")


@system.command("uninstall")
@_prefix_option
@click.option("--purge", is_flag=True, help="Also delete the owner's banger state and cache.")
@click.option("--yes", is_flag=True, help="Do not ask before --purge deletes data.")
def uninstall_cmd(prefix: Path | None, purge: bool, yes: bool) -> None:
    """Stop and disable the services and remove their files (data kept unless --purge)."""
    from banger.system.install import purge_targets, read_metadata, uninstall

    prefix = prefix.absolute() if prefix else None
    if purge and not yes:
        metadata = read_metadata(prefix)
        targets = ", ".join(str(p) for p in purge_targets(metadata)) if metadata else "?"
        if not click.confirm(f"delete {targets} for good?", default=False):
            raise click.Abort()
    for path in uninstall(prefix, purge=purge):
        click.echo(f"removed {path}")


@system.command("restart")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def restart_cmd(ctx: click.Context, as_json: bool) -> None:
    """Restart both services, the helper first."""
    from banger.system.install import restart

    restart()
    if as_json or root_flag(ctx, "json"):
        click.echo(json.dumps({"restarted": ["banger-helper", "bangerd"]}, indent=2))
    else:
        click.echo("restarted banger-helper and bangerd")


@system.command("status")
@_prefix_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def status_cmd(ctx: click.Context, prefix: Path | None, as_json: bool) -> None:
    """Units, sockets, versions and recent errors; exits 1 when unhealthy."""
    from banger.system.status import gather_status

    report = gather_status(prefix.absolute() if prefix else None)
    if as_json or root_flag(ctx, "json"):
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_status(report)
    if not report.healthy:
        ctx.exit(1)


def _print_status(report: object) -> None:
    from banger.system.status import StatusReport

    assert isinstance(report, StatusReport)
    if not report.installed:
        click.echo(report.problems[0])
        return
    click.echo(f"owner:    {report.owner}")
    for unit in report.units:
        state = unit.active or "systemd not asked"
        click.echo(
            f"unit:     {unit.name}: {'present' if unit.file_present else 'MISSING'}, {state}"
        )
    for sock in report.sockets:
        click.echo(f"socket:   {sock.name}: {sock.detail}")
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items() if v is not None)
    click.echo(f"versions: {versions}{'  (MISMATCH)' if report.version_mismatch else ''}")
    for name, lines in report.log_errors.items():
        for line in lines:
            click.echo(f"{name} log: {line}")
    if report.healthy:
        click.echo("healthy")
    else:
        click.echo(f"unhealthy ({len(report.problems)} problems):")
        for problem in report.problems:
            click.echo(f"  - {problem}")
