"""WorkspaceService: ``workspace prepare`` and ``workspace export`` as VM operations.

The repository lives on the host where the CLI runs; bangerd runs as the same
owner, so the CLI sends the repository's absolute path and the daemon reads it
directly. Each transfer is an operation (``workspace.prepare`` /
``workspace.export``) with stages ``lock`` → ``connect`` → ``transfer`` or
``export``, progress events, and a final ``result`` event whose data is what
the CLI prints (files copied; commits and files that came back).

A transfer holds the VM's workspace lock (:mod:`banger.daemon.vms.transfers`)
from before it connects until it is done: two transfers of one VM run one
after the other (the second waits in ``lock``). It does not hold the VM's
lifecycle lock: ``vm stop``/``restart`` and ``vm rm --force`` cancel a running
transfer (which leaves the old guest copy or branch) instead of waiting behind
it; a plain ``vm rm`` refuses while one runs. The guest connection uses the pinned
per-VM host key (:func:`banger.guest.ssh.open_connection`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

from banger.api_models import Operation
from banger.daemon.ops import OpHandle
from banger.daemon.progress import FileProgress
from banger.daemon.vms.service import VMService
from banger.errors import Conflict, InvalidArgument
from banger.store import VMRecord, VMState
from banger.workspace import (
    ExportResult,
    PrepareResult,
    SSHGuestShell,
    default_branch,
    export_workspace,
    find_repository,
    guest_destination,
    prepare_workspace,
)
from banger.workspace.export import check_branch_name, refuse_overwrite

#: The event kind carrying an operation's outcome in its ``data`` (the CLI reads it).
EV_RESULT = "result"
CONNECT_TIMEOUT = 30.0
MIB = 1024 * 1024


def _repository(path: str, command: str) -> Path:
    """The repository containing ``path``, which must be absolute (the CLI resolves it)."""
    if not path.startswith("/"):
        raise InvalidArgument(
            f"path: {path!r} must be absolute", hint="the CLI sends the resolved path"
        )
    return find_repository(Path(path), command)


def _require_running(vm: VMRecord, vms: VMService) -> None:
    if vm.state != VMState.RUNNING or vm.ip is None or not vms.alive(vm):
        raise Conflict(
            f"VM {vm.name} is {vm.state.value}, not running",
            hint=f"start it first: banger vm start {vm.name}",
        )


def prepare_data(vm: str, result: PrepareResult) -> dict[str, Any]:
    return {
        "vm": vm,
        "repo": str(result.repo),
        "dest": str(result.dest),
        "files": result.files,
        "bytes": result.bytes,
        "duration": round(result.duration, 3),
        "warnings": list(result.warnings),
    }


def export_data(vm: str, result: ExportResult) -> dict[str, Any]:
    data = asdict(result)
    data.update(
        vm=vm,
        repo=str(result.repo),
        commits=list(result.commits),
        files_changed=list(result.files_changed),
        duration=round(result.duration, 3),
    )
    return data


class WorkspaceService:
    def __init__(self, vms: VMService) -> None:
        self.vms = vms
        self.store = vms.store

    async def _vm(self, ref: str) -> VMRecord:
        vm = await asyncio.to_thread(self.store.resolve_vm, ref)
        _require_running(vm, self.vms)
        return vm

    @asynccontextmanager
    async def _guest(self, vm: VMRecord, op: OpHandle) -> AsyncIterator[SSHGuestShell]:
        """The VM's workspace lock, then an SSH shell into it (the VM checked again
        under the lock). Not the VM's lifecycle lock: stop and rm cancel a transfer
        instead of waiting for it (:mod:`banger.daemon.vms.transfers`)."""
        await op.stage("lock")
        async with self.vms.transfers.hold(vm.id):
            current = await asyncio.to_thread(self.store.get_vm, vm.id)
            _require_running(current, self.vms)
            await op.stage("connect")
            # The VM's held connection: no SSH handshake per transfer.
            conns = self.vms.pipeline.conns
            async with conns.channel(current, connect_timeout=CONNECT_TIMEOUT) as conn:
                yield SSHGuestShell(conn)

    async def prepare(
        self, ref: str, path: str, dest: str | None, *, force: bool = False
    ) -> Operation:
        """Copy the repository containing ``path`` into the VM (replacing an earlier copy).

        An earlier copy holding work the host never got is refused unless ``force``.
        """
        vm = await self._vm(ref)
        repo = await asyncio.to_thread(_repository, path, "prepare")
        target = guest_destination(repo, dest)

        async def body(op: OpHandle) -> None:
            progress = FileProgress(op, asyncio.get_running_loop())
            async with self._guest(vm, op) as shell:
                await op.stage("transfer", f"{repo} → {vm.name}:{target}")
                try:
                    result = await prepare_workspace(
                        shell, repo, dest=target, progress=progress, force=force, vm=vm.name
                    )
                finally:
                    await progress.flush()
                # reported before the lock goes: events order the transfers as they ran
                for warning in result.warnings:
                    await op.event("warning", warning)
                size = result.bytes / MIB
                await op.event(
                    EV_RESULT,
                    f"{result.files} files ({size:.1f} MiB) copied to {vm.name}:{result.dest}",
                    prepare_data(vm.name, result),
                )

        return await self.vms.ops.start("workspace.prepare", vm.name, body)

    async def export(
        self,
        ref: str,
        path: str,
        *,
        branch: str | None,
        guest_path: str | None,
        force: bool,
    ) -> Operation:
        """Fetch the VM's copy of the repository containing ``path`` into a new host branch."""
        vm = await self._vm(ref)
        repo = await asyncio.to_thread(_repository, path, "export")
        name = await check_branch_name(repo, branch or default_branch(vm.name))
        source: PurePosixPath = guest_destination(repo, guest_path)
        await refuse_overwrite(repo, name, force)  # a clear 409 before anything starts

        async def body(op: OpHandle) -> None:
            async with self._guest(vm, op) as shell:
                await op.stage("export", f"{vm.name}:{source} → {repo} branch {name}")
                result = await export_workspace(
                    shell, repo, vm=vm.name, guest_path=source, branch=name, force=force
                )
                if (repo / ".gitmodules").exists():  # said, not silently partial (item 7)
                    await op.event(
                        "warning",
                        "submodules: commits made inside them are not exported, only the"
                        " repository's own (a submodule's new commit shows as a changed gitlink)",
                    )
                count = len(result.commits)
                await op.event(
                    EV_RESULT,
                    f"branch {result.branch}: {count} commit{'s' if count != 1 else ''}, "
                    f"{len(result.files_changed)} files changed",
                    export_data(vm.name, result),
                )

        return await self.vms.ops.start("workspace.export", vm.name, body)
