"""``banger config``: show and validate config.toml (client-side, no daemon needed),
and ``reload`` (bangerd re-reads it now; it also does so by itself when the file changes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from banger.cli.output import print_json
from banger.cli.state import get_state, json_option
from banger.errors import BangerError


@click.group(name="config")
def config() -> None:
    """The configuration file (~/.config/banger/config.toml)."""


@config.command(name="show")
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file to read (default: the user's config.toml).",
)
@json_option
def show(file: Path | None) -> None:
    """Print the effective configuration (defaults filled in)."""
    from banger.config import load_config

    state = get_state()
    data = load_config(file, paths=state.paths).to_json_dict()
    if state.json:
        print_json(data)
        return
    for key, value in flatten(data):
        click.echo(f"{key} = {value}")


@config.command(name="validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def validate(file: Path | None) -> None:
    """Check FILE (default: the user's config.toml); list every problem, exit 2 if any."""
    from banger.config import config_problems

    state = get_state()
    path = file if file is not None else state.paths.config_file
    # A missing default file means "all defaults", which is valid; a file named
    # on the command line must exist.
    problems = config_problems(path, missing_ok=file is None)
    if state.json:
        print_json({"path": str(path), "valid": not problems, "problems": problems})
    elif problems:
        for problem in problems:
            click.echo(problem)
    else:
        click.echo(f"{path}: ok")
    if problems:
        count = len(problems)
        raise ConfigInvalid(f"{path}: {count} problem{'s' if count > 1 else ''}")


@config.command(name="reload")
@json_option
def reload() -> None:
    """Make bangerd re-read config.toml now (it also does when the file changes, and on SIGHUP).

    An invalid file is refused (exit 2) and the last good config stays in force.
    """
    state = get_state()
    result = state.call(lambda client: client.reload_config())
    if state.json:
        print_json(result)
        return
    changed = result.get("changed") or []
    waiting = result.get("restart_needed") or []
    click.echo(
        f"reloaded {result.get('path')}: "
        + (", ".join(changed) + " changed" if changed else "no change")
    )
    if waiting:
        click.echo(
            f"note: {', '.join(waiting)} changed too; that applies when bangerd restarts",
            err=True,
        )


class ConfigInvalid(BangerError):
    """An invalid config is bad input: exit 2, as for every command (README "Exit
    status"); the problems are already printed, one per line."""

    exit_code = 2


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``vm.vcpus = 2`` lines; arrays of tables as ``file_sync[0].host``."""
    import json

    out: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out += flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        for index, value in enumerate(data):
            out += flatten(value, f"{prefix}[{index}]")
    else:
        out.append((prefix, json.dumps(data)))
    return out
