"""``[[file_sync]]`` and the owner's git identity, staged for the work-disk batch.

The start pipeline provisions the work disk with one debugfs batch
(:func:`banger.disk.workdisk.provision_work_disk`). This module produces the
synced part of that batch, at create and again at every start (idempotent:
files are overwritten, the identity is merged into what the disk holds):

1. :func:`banger.disk.sync_plan.plan_file_sync` reads the host side for the owner
   (the daemon's ``$HOME``) and turns the entries into disk items, collecting
   one warning per skipped path;
2. :func:`banger.disk.gitidentity.stage_git_identity` merges ``user.name`` and
   ``user.email`` into the guest's ``~/.gitconfig`` (the one file_sync writes,
   else the one on the disk), or says why it did not;
3. warnings and notices become operation events, which the CLI prints.

Everything that reads the host happens before the batch, so a host-side
problem (an unreadable file) fails the stage with nothing written.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from banger.config.file_sync import FileSync
from banger.daemon.ops import OpHandle
from banger.disk.gitidentity import GITCONFIG, stage_git_identity
from banger.disk.sync_plan import plan_file_sync
from banger.disk.workdisk import DirItem, FileSyncItem


@dataclass(frozen=True)
class StagedSync:
    """The synced part of the provisioning batch, and what to tell the user."""

    dirs: tuple[DirItem, ...]
    files: tuple[FileSyncItem, ...]
    warnings: tuple[str, ...]
    notices: tuple[str, ...]
    #: e.g. "3 synced files, git identity" (for the stage's info event)
    summary: str
    #: Of ``files``, those [[file_sync]] wrote, and the git identity's (recorded on the disk)
    synced: tuple[str, ...] = ()
    git_identity: str | None = None
    #: Items whose names a disk image cannot hold: copied over SSH after boot
    late_dirs: tuple[DirItem, ...] = ()
    late_files: tuple[FileSyncItem, ...] = ()


def stage_work_sync(
    entries: Sequence[FileSync], disk: Path, *, home: Path, stage_dir: Path
) -> StagedSync:
    """Plan ``entries`` and merge the git identity; staged files go to ``stage_dir``.

    Blocking (reads host files, runs git and debugfs): call it in a thread.
    """
    plan = plan_file_sync(entries, home=home)
    synced_files = len(plan.files)
    synced = tuple(f.guest_rel_path for f in plan.files)
    identity = stage_git_identity(
        disk, home=home, stage_dir=stage_dir, synced=plan.file_for(GITCONFIG)
    )
    notices: tuple[str, ...] = plan.notices
    if identity.item is not None:
        plan = plan.with_file(identity.item)
    elif identity.notice:
        notices = (*notices, identity.notice)
    parts = [f"{synced_files} synced file{'s' if synced_files != 1 else ''}"]
    if identity.item is not None:
        parts.append("git identity")
    return StagedSync(
        plan.dirs,
        plan.files,
        plan.warnings,
        notices,
        ", ".join(parts),
        synced=synced,
        git_identity=identity.item.guest_rel_path if identity.item is not None else None,
        late_dirs=plan.late_dirs,
        late_files=plan.late_files,
    )


@asynccontextmanager
async def staged_work_sync(
    entries: Sequence[FileSync], disk: Path, op: OpHandle, *, home: Path | None = None
) -> AsyncIterator[StagedSync]:
    """:func:`stage_work_sync` with its warnings reported; staged files live inside the block.

    ``home`` defaults to the daemon's home, which is the owner's (bangerd runs
    as the owner).
    """
    owner_home = home if home is not None else Path.home()
    with tempfile.TemporaryDirectory(prefix="banger-sync-") as stage:
        staged = await asyncio.to_thread(
            stage_work_sync, entries, disk, home=owner_home, stage_dir=Path(stage)
        )
        for warning in staged.warnings:
            await op.event("warning", warning)
        for notice in staged.notices:
            await op.event("notice", notice)
        yield staged
