"""A workspace given at ``vm create``/``vm run``: onto the work disk before the first boot.

The VM does not run yet when the repository is known, so its copy is written
into the new work disk from the host (:mod:`banger.workspace.onto_disk`: debugfs,
no guest CPU, no SSH) in the create's ``workspace`` stage, after
``prepare_work_disk``. Where a disk image cannot take it (a name debugfs cannot
express, something already at the destination in the image's work seed), a VM
that is being started gets the SSH copy ``workspace prepare`` makes, once the
guest answers; a VM created without ``--start`` fails the create instead (its
undo removes everything).

Either way the operation's ``workspace`` event carries what ``workspace
prepare``'s result carries (``dest``, ``files``, ``bytes``, …) plus ``via``
(``disk`` or ``ssh``): the CLI starts the command or shell there.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from banger.api_models import CreateWorkspaceRequest
from banger.daemon.ops import OpHandle
from banger.daemon.progress import FileProgress
from banger.daemon.vms.pipeline import Pipeline
from banger.daemon.vms.transfers import Transfers
from banger.errors import InvalidArgument
from banger.store import Store, VMRecord
from banger.workspace import SSHGuestShell, find_repository, guest_destination, prepare_workspace
from banger.workspace.disk_plan import Unwritable, disk_root
from banger.workspace.gitfiles import list_workspace
from banger.workspace.onto_disk import DestinationExists, write_workspace

#: The event kind whose data says where the workspace is (the CLI reads it).
EV_WORKSPACE = "workspace"
MIB = 1024 * 1024
CONNECT_TIMEOUT = 30.0


@dataclass(frozen=True)
class CreateWorkspace:
    repo: Path
    dest: PurePosixPath


@dataclass(frozen=True)
class Pending:
    """What is left after the ``workspace`` stage: None (done), or why SSH copies it."""

    over_ssh: str | None


def plan_workspace(request: CreateWorkspaceRequest) -> CreateWorkspace:
    """Check the request's workspace before anything is created (a 400 or 404 here)."""
    if not request.path.startswith("/"):
        raise InvalidArgument(
            f"workspace.path: {request.path!r} must be absolute",
            hint="the CLI sends the resolved path",
        )
    repo = find_repository(Path(request.path))
    dest = guest_destination(repo, request.dest)
    disk_root(dest)  # on the work disk: the only place a pre-boot copy can go
    return CreateWorkspace(repo, dest)


async def _report(
    op: OpHandle, vm: str, ws: CreateWorkspace, via: str, data: dict[str, Any]
) -> None:
    size = int(data["bytes"]) / MIB
    await op.event(
        EV_WORKSPACE,
        f"workspace: {data['files']} files ({size:.1f} MiB) copied to {vm}:{ws.dest}"
        f" {'onto the work disk before boot' if via == 'disk' else 'over SSH'}"
        f" in {data['duration']:.1f}s",
        {"vm": vm, "repo": str(ws.repo), "dest": str(ws.dest), "via": via, **data},
    )


async def before_boot(
    pipeline: Pipeline, vm: VMRecord, ws: CreateWorkspace, op: OpHandle, *, will_boot: bool
) -> Pending:
    """The ``workspace`` stage: write the copy into the VM's (new, stopped) work disk."""
    await op.stage("workspace", f"{ws.repo} → {vm.name}:{ws.dest}")
    listing = await asyncio.to_thread(list_workspace, ws.repo)
    for warning in listing.warnings:
        await op.event("warning", warning)
    progress = FileProgress(op, asyncio.get_running_loop())
    disk = pipeline.paths.vm_work_disk(vm.id)
    try:
        result = await asyncio.to_thread(write_workspace, disk, listing, ws.dest, progress=progress)
    except (Unwritable, DestinationExists) as exc:
        if not will_boot:
            raise
        await op.event("notice", f"{exc.message}: the workspace is copied over SSH after boot")
        return Pending(exc.message)
    finally:
        await progress.flush()
    data = {
        "files": result.files,
        "bytes": result.bytes,
        "duration": round(result.duration, 3),
        "warnings": list(listing.warnings),
    }
    await _report(op, vm.name, ws, "disk", data)
    return Pending(None)


async def after_boot(
    pipeline: Pipeline,
    store: Store,
    transfers: Transfers,
    vm_id: str,
    ws: CreateWorkspace,
    pending: Pending,
    op: OpHandle,
) -> None:
    """The SSH copy, when :func:`before_boot` could not write the disk."""
    if pending.over_ssh is None:
        return
    vm = await asyncio.to_thread(store.get_vm, vm_id)
    await op.stage("workspace", f"{ws.repo} → {vm.name}:{ws.dest} over SSH")
    progress = FileProgress(op, asyncio.get_running_loop())
    async with (
        transfers.hold(vm.id),
        pipeline.conns.channel(vm, any_state=True, connect_timeout=CONNECT_TIMEOUT) as conn,
    ):
        try:
            result = await prepare_workspace(
                SSHGuestShell(conn), ws.repo, dest=ws.dest, progress=progress, vm=vm.name
            )
        finally:
            await progress.flush()
    for warning in result.warnings:
        await op.event("warning", warning)
    data = {
        "files": result.files,
        "bytes": result.bytes,
        "duration": round(result.duration, 3),
        "warnings": list(result.warnings),
    }
    await _report(op, vm.name, ws, "ssh", data)
