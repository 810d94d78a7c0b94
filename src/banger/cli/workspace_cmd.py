"""``banger workspace``: repository in (``prepare``), branch out (``export``).

The repository is on this host; bangerd runs as the same user, so the CLI only
resolves the path and the daemon reads the repository itself, as an operation
holding the VM's lock. The operation's last ``result`` event carries what
happened, printed here (or as JSON with ``--json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from banger.cli.output import print_json
from banger.cli.state import CliState, get_state, json_option

if TYPE_CHECKING:
    from collections.abc import Sequence

    from banger.api_models import Operation, SSHInfo

#: The event kind holding an operation's outcome (banger.daemon.workspace_svc.EV_RESULT).
EV_RESULT = "result"


@click.group(name="workspace")
def workspace() -> None:
    """Copy a repository into a VM and export the work as a git branch."""


def _abspath(path: str | None) -> str:
    # the daemon has another working directory: send an absolute, resolved path
    return str((Path(path) if path is not None else Path.cwd()).resolve())


def follow_result(state: CliState, op: Operation) -> tuple[Operation, dict[str, Any]]:
    """Follow ``op`` to its end (raising if it failed); return it and its result data."""
    from banger.cli.progress import follow

    final = follow(state, op)
    data: dict[str, Any] = {}
    for event in state.client().stream_events(op.id):
        if event.kind == EV_RESULT:
            data = dict(event.data)
    return final, data


def prepare_workspace(
    state: CliState,
    vm: str,
    path: str | None = None,
    dest: str | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Run ``workspace prepare`` and return its result (``dest``, ``files``, …)."""
    body: dict[str, Any] = {"path": _abspath(path), "force": force}
    if dest is not None:
        body["dest"] = dest
    op = state.call(lambda c: c.workspace_prepare(vm, body))
    return follow_result(state, op)[1]


@workspace.command(name="prepare")
@click.argument("vm")
@click.argument("path", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--dest", help="Guest directory (absolute or under /root); default /root/<repo>.")
@click.option(
    "--force", is_flag=True, help="Replace the guest copy even if it holds unexported work."
)
@json_option
def prepare(vm: str, path: str | None, dest: str | None, force: bool) -> None:
    """Copy the git repository at PATH (default: the current one) into VM.

    Tracked files, untracked files that are not ignored, and .git (history,
    branches, the current branch). Re-running replaces the guest copy, but
    refuses (naming them) if it holds commits or changes made in the guest
    since the last prepare or export; --force replaces it anyway.
    """
    state = get_state()
    result = prepare_workspace(state, vm, path, dest, force=force)
    if state.json:
        print_json(result)
        return
    size = int(result.get("bytes", 0)) / (1024 * 1024)
    click.echo(
        f"{result.get('repo')} → {vm}:{result.get('dest')}: "
        f"{result.get('files')} files, {size:.1f} MiB in {result.get('duration', 0):.1f}s"
    )


@workspace.command(name="export")
@click.argument("vm")
@click.argument("path", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option("--branch", help="Host branch to create; default banger/<vm>.")
@click.option("--path", "guest_path", help="The guest copy; default /root/<repo name>.")
@click.option("--force", is_flag=True, help="Replace the branch if it exists.")
@json_option
def export(
    vm: str, path: str | None, branch: str | None, guest_path: str | None, force: bool
) -> None:
    """Bring VM's work back into the repository at PATH (default: the current one).

    The guest's new commits, plus its uncommitted changes as one extra commit,
    land on a new branch. Your working tree, index and current branch are
    never touched.
    """
    state = get_state()
    body: dict[str, Any] = {"path": _abspath(path), "force": force}
    if branch is not None:
        body["branch"] = branch
    if guest_path is not None:
        body["guest_path"] = guest_path
    op = state.call(lambda c: c.workspace_export(vm, body))
    _, result = follow_result(state, op)
    if state.json:
        print_json(result)
        return
    commits = list(result.get("commits") or [])
    files = list(result.get("files_changed") or [])
    click.echo(
        f"branch {result.get('branch')} in {result.get('repo')}: "
        f"{len(commits)} commit{'s' if len(commits) != 1 else ''}, "
        f"{len(files)} file{'s' if len(files) != 1 else ''} changed"
        + (" (uncommitted changes as the last commit)" if result.get("snapshot") else "")
    )
    for line in commits:
        click.echo(f"  {line}")
    if result.get("diffstat"):
        click.echo(str(result["diffstat"]))


def repository_here() -> Path | None:
    """The git repository containing the current directory, or None (for ``vm run``)."""
    from banger.workspace.gitfiles import NotARepository, find_repository

    try:
        return find_repository(Path.cwd())
    except NotARepository:
        return None


def argv_in_workspace(info: SSHInfo, dest: str, command: Sequence[str]) -> list[str]:
    """The ssh argv running ``command`` (or a login shell) in the guest directory ``dest``."""
    from banger.cli.sshexec import argv_for
    from banger.guest.ssh import remote_command

    if command:
        return [*argv_for(info, None, tty=False), remote_command(list(command), cwd=dest)]
    shell = remote_command('exec "${SHELL:-/bin/sh}" -l', cwd=dest)
    return [*argv_for(info, None, tty=True), shell]


#: The create operation's event saying where the workspace went
#: (banger.daemon.vms.create_workspace.EV_WORKSPACE).
EV_WORKSPACE = "workspace"


def created_workspace(state: CliState, op: Operation) -> str:
    """The guest directory a finished ``vm create``/``vm run`` wrote the workspace to."""
    from banger.errors import BangerError

    for event in state.client().stream_events(op.id):
        if event.kind == EV_WORKSPACE and event.data.get("dest"):
            return str(event.data["dest"])
    raise BangerError(f"{op.kind} {op.target or ''}: no workspace was reported")


def workspace_request(path: str | Path) -> dict[str, Any]:
    """The create request's ``workspace`` (the path resolved here: bangerd has another cwd)."""
    return {"path": _abspath(str(path))}
