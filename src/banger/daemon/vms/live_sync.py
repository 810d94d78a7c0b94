"""``[[file_sync]]`` and the owner's git identity, applied to a guest that is running.

Before boot the work disk is provisioned offline with one debugfs batch
(:mod:`banger.daemon.vms.work_sync`). A guest that is already running (one
taken from a pool, issue #18 item 4) has its work disk mounted, so debugfs
cannot write it: here the same plan goes over ONE SFTP session on the held
connection, with the same results as the batch would give:

1. the host side first, nothing written in the guest yet:
   :func:`banger.disk.sync_plan.plan_file_sync` (an unreadable host file fails
   here), the owner's identity (git), and the guest's ``~/.gitconfig`` and
   synced record read over SFTP (reads only). The identity is merged by
   :func:`banger.disk.gitidentity.merge_gitconfig` into the ``.gitconfig``
   ``[[file_sync]]`` writes, else the guest's own;
2. then the writes: files an earlier sync recorded that nothing writes now are
   removed (:mod:`banger.disk.synced`), every directory made with its mode
   (parents before children), every file written with its mode, root-owned,
   atomically (a temporary name in the same directory, then ``posix-rename``:
   :meth:`banger.guest.files.GuestFiles.write`), the names a disk image cannot
   hold included; the record last.

A failure during the writes leaves each file old or new, never a part of one;
files already written stay written (a retry writes them again: idempotent).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from banger.config.file_sync import GUEST_HOME, FileSync
from banger.disk.gitidentity import (
    GITCONFIG,
    GITCONFIG_MODE,
    NO_IDENTITY_NOTICE,
    GitIdentity,
    merge_gitconfig,
    read_host_identity,
)
from banger.disk.sync_plan import plan_file_sync
from banger.disk.synced import SYNCED_RECORD_PATH, SyncedRecord
from banger.disk.workdisk import DirItem, FileSyncItem, disk_path
from banger.errors import BangerError, NotFound
from banger.guest.files import WRITE_CHUNK, GuestFiles, open_sftp

#: Where the work disk is mounted in the guest (the pipeline's ``GUEST_ROOT``).
GUEST_ROOT = str(GUEST_HOME)
#: banger's own directory on the work disk, private as the batch makes it.
_BANGER_DIR_MODE = 0o700
_RECORD_MODE = 0o600


@dataclass(frozen=True)
class LiveSync:
    """What :func:`sync_running_guest` did, and what to tell the user."""

    #: [[file_sync]] files written (the git identity's ``.gitconfig`` not counted)
    files: int
    dirs: int
    #: the merged ``.gitconfig``, relative to the guest root; None: not merged (see notices)
    git_identity: str | None
    #: files an earlier sync wrote that no entry writes now, removed (guest-root relative)
    removed: tuple[str, ...]
    warnings: tuple[str, ...]
    notices: tuple[str, ...]
    #: e.g. "3 synced files, git identity" (for the stage's info event)
    summary: str


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


async def _host_chunks(path: Path) -> AsyncIterator[bytes]:
    """``path``'s bytes in WRITE_CHUNK pieces, read off the event loop."""
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except OSError as exc:
        raise BangerError(
            f"file_sync: cannot read {path}: {exc.strerror or exc}",
            hint="the file changed while it was being synced; try again",
        ) from None
    try:
        while chunk := await asyncio.to_thread(handle.read, WRITE_CHUNK):
            yield chunk
    finally:
        handle.close()


async def _read_guest_file(files: GuestFiles, path: str) -> bytes | None:
    """The content of the regular file ``path``; None when nothing is there.

    A symlink, directory or other kind is a :class:`BangerError` (never followed).
    """
    try:
        entry = await files.stat(path)
    except NotFound:
        return None
    if entry.type != "file":
        raise BangerError(
            f"{path} in VM {files.vm} is a {entry.type}, not a file",
            hint="replace it with a regular file, or remove it",
        )
    _, chunks = await files.open_read(path)
    return b"".join([chunk async for chunk in chunks])


async def write_items(
    files: GuestFiles,
    dirs: Sequence[DirItem],
    items: Sequence[FileSyncItem],
    *,
    guest_root: str = GUEST_ROOT,
) -> None:
    """``dirs`` (parents first) then ``items`` under ``guest_root``, as the batch writes them.

    A directory gets its mode (a file or symlink in its way is removed first);
    a file is written root-owned with its mode, atomically, replacing a file or
    symlink there; a parent no item names is made 0755 when missing and left
    as it is otherwise.
    """
    made: set[str] = set()
    for d in dirs:
        path = f"{guest_root}/{d.guest_rel_path}"
        try:
            kind: str | None = (await files.stat(path)).type
        except NotFound:
            kind = None
        if kind is not None and kind != "dir":
            await files.remove(path)
        await files.mkdir(path, parents=True, mode=d.mode)
        made.add(path)
    for f in items:
        path = f"{guest_root}/{f.guest_rel_path}"
        parent = path.rsplit("/", 1)[0]
        if parent not in made:
            await files.mkdir(parent, parents=True)
            made.add(parent)
        await files.write(path, _host_chunks(f.host_path), mode=f.mode, uid=0, gid=0)


async def _stale(files: GuestFiles, old: SyncedRecord, new: SyncedRecord, root: str) -> list[str]:
    """Files ``old`` lists that ``new`` does not write and that are files or symlinks now."""
    keep = set(new.written)
    found: list[str] = []
    for rel in (p for p in old.files if p not in keep):
        try:
            kind = (await files.stat(root + rel)).type
        except NotFound:
            continue
        if kind in ("file", "symlink"):
            found.append(rel)
    return found


async def _merged_gitconfig(
    files: GuestFiles, base_item: FileSyncItem | None, identity: GitIdentity, stage: Path, root: str
) -> FileSyncItem:
    """The guest's ``.gitconfig`` with the identity merged in, staged in ``stage``.

    The base is the file ``[[file_sync]]`` writes there (``base_item``), else
    the guest's current one (read over SFTP), else nothing.
    """
    if base_item is not None:
        base = await asyncio.to_thread(base_item.host_path.read_bytes)
    else:
        base = await _read_guest_file(files, f"{root}/{GITCONFIG}") or b""
    content = await asyncio.to_thread(merge_gitconfig, base, identity, workdir=stage)
    staged = stage / "gitconfig"
    await asyncio.to_thread(staged.write_bytes, content)
    return FileSyncItem(GITCONFIG, staged, GITCONFIG_MODE)


async def _old_record(files: GuestFiles, path: str) -> SyncedRecord:
    """The guest's record; empty when there is none or it is not a file (the guest can
    write it: as :func:`banger.disk.synced.read_synced_record` treats the disk's)."""
    try:
        if (await files.stat(path)).type != "file":
            return SyncedRecord()
    except NotFound:
        return SyncedRecord()
    return SyncedRecord.from_bytes(await _read_guest_file(files, path) or b"")


async def sync_running_guest(
    conn: asyncssh.SSHClientConnection,
    entries: Sequence[FileSync],
    *,
    home: Path,
    guest_root: str = GUEST_ROOT,
    vm: str = "guest",
) -> LiveSync:
    """Apply ``entries`` and the owner's git identity to the running guest on ``conn``.

    ``home`` is the owner's home (the host side is read for the owner);
    ``guest_root`` where the work disk is mounted; ``vm`` names the guest in
    errors. A host-side problem raises before anything is written in the
    guest. Warnings (skipped paths) and notices (no identity, names a disk
    image cannot hold) are returned for the caller's operation events.
    """
    plan = await asyncio.to_thread(plan_file_sync, entries, home=home)
    identity = await asyncio.to_thread(read_host_identity, home)
    synced = len(plan.files) + len(plan.late_files)
    # As the batch records it: what [[file_sync]] wrote (names a disk image cannot
    # hold are not listed) and the file the identity went into.
    recorded = tuple(disk_path(f.guest_rel_path) for f in plan.files)
    notices = plan.notices if not identity.empty else (*plan.notices, NO_IDENTITY_NOTICE)
    record_path = guest_root + SYNCED_RECORD_PATH
    merged: str | None = None
    async with open_sftp(conn, vm) as files:
        old_record = await _old_record(files, record_path)
        with tempfile.TemporaryDirectory(prefix="banger-live-sync-") as stage:
            if not identity.empty:
                item = await _merged_gitconfig(
                    files, plan.file_for(GITCONFIG), identity, Path(stage), guest_root
                )
                plan = plan.with_file(item)
                merged = item.guest_rel_path
            new_record = SyncedRecord(recorded, disk_path(merged) if merged else None)
            removed = await _stale(files, old_record, new_record, guest_root)
            # -- the writes: nothing above wrote in the guest --------------------------
            for rel in removed:
                await files.remove(guest_root + rel)
            await write_items(
                files,
                (*plan.dirs, *plan.late_dirs),
                (*plan.files, *plan.late_files),
                guest_root=guest_root,
            )
            await files.mkdir(record_path.rsplit("/", 1)[0], parents=True, mode=_BANGER_DIR_MODE)
            await files.write(
                record_path, _bytes(new_record.to_bytes()), mode=_RECORD_MODE, uid=0, gid=0
            )
    parts = [_plural(synced, "synced file")]
    if merged is not None:
        parts.append("git identity")
    if removed:
        parts.append(f"{_plural(len(removed), 'stale file')} removed")
    return LiveSync(
        files=synced,
        dirs=len(plan.dirs) + len(plan.late_dirs),
        git_identity=merged,
        removed=tuple(r.lstrip("/") for r in removed),
        warnings=plan.warnings,
        notices=notices,
        summary=", ".join(parts),
    )


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data
