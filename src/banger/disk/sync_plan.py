"""Plan ``[[file_sync]]``: turn config entries into work-disk items, before any write.

The work disk is provisioned by ONE debugfs batch
(:func:`banger.disk.workdisk.provision_work_disk`). Everything that can go
wrong with the host side (unreadable files, loops, names debugfs cannot write)
is found here first, so a failing start leaves nothing half-written.

Rules (see ``docs/ARCHITECTURE.md`` and :mod:`banger.config.file_sync`):

- a file entry becomes one root-owned file with the entry's ``mode``;
- a directory entry is copied recursively: every file and directory keeps its
  own permission bits (setuid/setgid/sticky dropped: they would be root's in the
  guest); the entry's ``mode`` is ignored;
- the ``host`` path itself may be a symlink (the user named it), but symlinks
  nested in a synced directory are skipped with a warning, whatever they point
  to: they could lead out of the tree the user asked for;
- a missing ``host`` path is skipped with a warning; fifos, sockets and devices
  are skipped with a warning; any other problem is a :class:`BangerError`
  naming the path;
- banger's own files (``.ssh/authorized_keys``, ``.banger/``) are never
  overwritten: an entry targeting them is refused, a file inside a synced
  directory landing on them is skipped with a warning.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from banger.config.file_sync import FileSync, is_reserved
from banger.disk.debugfs_script import host_path, image_path
from banger.disk.workdisk import DirItem, FileSyncItem
from banger.errors import BangerError, InvalidArgument

#: sshd's StrictModes refuses a group/world-writable ``~/.ssh``: keep it private.
SSH_DIR = ".ssh"
_PERMISSION_BITS = 0o777


@dataclass(frozen=True)
class SyncPlan:
    """What to write onto the work disk, and what was skipped (one line each)."""

    dirs: tuple[DirItem, ...] = ()
    files: tuple[FileSyncItem, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Names debugfs cannot write (a ``"``, a newline, a tab…): copied over SSH
    #: once the guest is up instead (parents before children), never dropped.
    late_dirs: tuple[DirItem, ...] = ()
    late_files: tuple[FileSyncItem, ...] = ()
    notices: tuple[str, ...] = ()

    def with_file(self, item: FileSyncItem) -> SyncPlan:
        """This plan with ``item`` added, replacing a file planned for the same guest path."""
        kept = tuple(f for f in self.files if f.guest_rel_path != item.guest_rel_path)
        return replace(self, files=(*kept, item))

    def file_for(self, guest_rel_path: str) -> FileSyncItem | None:
        return next((f for f in self.files if f.guest_rel_path == guest_rel_path), None)


@dataclass
class _Builder:
    home: Path
    dirs: list[DirItem] = field(default_factory=list)
    files: list[FileSyncItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    late_dirs: list[DirItem] = field(default_factory=list)
    late_files: list[FileSyncItem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def show(self, path: Path) -> str:
        """``~/…`` for paths in the home (how the user wrote them)."""
        try:
            return "~/" + str(path.relative_to(self.home))
        except ValueError:
            return str(path)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def plan(self) -> SyncPlan:
        return SyncPlan(
            tuple(self.dirs),
            tuple(self.files),
            tuple(self.warnings),
            tuple(self.late_dirs),
            tuple(self.late_files),
            tuple(self.notices),
        )


def _error(builder: _Builder, path: Path, exc: OSError) -> BangerError:
    reason = exc.strerror or str(exc)
    return BangerError(
        f"file_sync: cannot read {builder.show(path)}: {reason}",
        hint="fix the file's permissions or remove the [[file_sync]] entry",
    )


def _check_readable(builder: _Builder, path: Path, *, follow: bool = False) -> None:
    """Open the file now so a start fails here, before the debugfs batch, not inside it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _error(builder, path, exc) from None
    os.close(fd)


def _writable_names(builder: _Builder, source: Path, guest_rel: str) -> bool:
    """Whether debugfs can express both names (no ``"`` or control characters);
    if not, the entry is copied over SSH after boot (said in a notice)."""
    try:
        host_path(source, "file_sync host path")
        image_path("/" + guest_rel, "file_sync guest path")
    except InvalidArgument:
        builder.notices.append(
            f"file_sync: {builder.show(source)!r} has a name a disk image cannot hold;"
            " copied over SSH once the guest is up"
        )
        return False
    return True


def _plan_file(
    builder: _Builder, source: Path, guest_rel: str, mode: int, late: bool = False
) -> None:
    _check_readable(builder, source)
    (builder.late_files if late else builder.files).append(FileSyncItem(guest_rel, source, mode))


def _dir_mode(guest_rel: str, st_mode: int) -> int:
    if guest_rel == SSH_DIR:
        return 0o700
    return st_mode & _PERMISSION_BITS


def _skipped_link_reason(link: Path, root: Path) -> str:
    """Why a nested symlink is not synced, as the user should read it.

    It is never followed either way; the reason only says whether it would
    have led out of the synced tree (judged from its text, not by following it).
    """
    try:
        target = link.readlink()
    except OSError:
        return "nested symlinks are never synced"
    dest = os.path.normpath(link.parent / target)  # text only: nothing is resolved
    if dest == str(root) or dest.startswith(f"{root}/"):
        return "nested symlinks are never synced (this one stays inside the tree: sync its target)"
    return "it points outside the synced tree (nested symlinks are never followed)"


def _plan_tree(
    builder: _Builder,
    top: Path,
    guest_top: str,
    top_mode: int,
    root: Path | None = None,
    late: bool = False,
) -> None:
    """Walk a directory without following nested symlinks; parents before children.

    ``root`` is the entry's own directory (``top`` on the first call); ``late``:
    this directory (and so all below it) is copied over SSH after boot.
    """
    root = root or top
    (builder.late_dirs if late else builder.dirs).append(
        DirItem(guest_top, _dir_mode(guest_top, top_mode))
    )
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except OSError as exc:
        raise _error(builder, top, exc) from None
    for entry in entries:
        source = Path(entry.path)
        guest_rel = f"{guest_top}/{entry.name}"
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # vanished while we looked: as if it had never been there
        except OSError as exc:
            raise _error(builder, source, exc) from None
        if stat.S_ISLNK(st.st_mode):
            builder.warn(
                f"file_sync: skipped symlink {builder.show(source)}: "
                + _skipped_link_reason(source, root)
            )
            continue
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            builder.warn(
                f"file_sync: skipped {builder.show(source)}: not a regular file or directory"
            )
            continue
        entry_late = late or not _writable_names(builder, source, guest_rel)
        if is_reserved(guest_rel):
            builder.warn(
                f"file_sync: skipped {builder.show(source)}: ~/{guest_rel} is managed by banger"
            )
            continue
        if stat.S_ISDIR(st.st_mode):
            _plan_tree(builder, source, guest_rel, st.st_mode, root, entry_late)
        else:
            _plan_file(builder, source, guest_rel, st.st_mode & _PERMISSION_BITS, entry_late)


def _check_entry(builder: _Builder, index: int, entry: FileSync) -> None:
    # banger's own destinations never get here: FileSync refuses them when the
    # config is read (config.file_sync.is_reserved, what `config validate` says too).
    where = f"file_sync[{index}]"
    home = builder.home
    if home not in entry.host.parents:
        raise InvalidArgument(
            f"{where}.host: {entry.host} is not inside the owner's home {home}",
            hint="file_sync only reads files in your home",
        )
    try:
        host_path(entry.host, f"{where}.host")
        image_path("/" + entry.guest, f"{where}.guest")
    except InvalidArgument as exc:
        raise InvalidArgument(exc.message, exc.hint) from None


def _check_inside_home(builder: _Builder, index: int, entry: FileSync) -> None:
    """The entry, its symlinks resolved, must still be in the home: a link the user
    named is followed, but never out of the home (README: file_sync never reads
    outside it on your behalf)."""
    real = Path(os.path.realpath(entry.host))
    home = Path(os.path.realpath(builder.home))
    if real != home and home not in real.parents:
        raise InvalidArgument(
            f"file_sync[{index}].host: {builder.show(entry.host)} resolves to {real},"
            f" outside your home {home}",
            hint="file_sync only reads files in your home: copy the file into it, or name"
            " the target if it is in your home",
        )


def plan_file_sync(entries: Sequence[FileSync], *, home: Path) -> SyncPlan:
    """Turn ``[[file_sync]]`` entries into work-disk items (reads the host, writes nothing).

    ``home`` is the owner's home: entries must lie inside it (the config
    checked that already; checked again because this reads files for the owner).
    """
    builder = _Builder(Path(os.path.normpath(home)))
    for index, entry in enumerate(entries):
        _check_entry(builder, index, entry)
        try:
            # the top-level path is followed when it is a symlink: the user named it
            st = entry.host.stat()
        except FileNotFoundError:
            dangling = " (a dangling symlink)" if entry.host.is_symlink() else ""
            builder.warn(f"file_sync: skipped {builder.show(entry.host)}: not found{dangling}")
            continue
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                builder.warn(
                    f"file_sync: skipped {builder.show(entry.host)}: not found "
                    "(a parent is not a directory)"
                )
                continue
            raise _error(builder, entry.host, exc) from None
        _check_inside_home(builder, index, entry)
        if stat.S_ISDIR(st.st_mode):
            _plan_tree(builder, entry.host, entry.guest, st.st_mode)
        elif stat.S_ISREG(st.st_mode):
            _check_readable(builder, entry.host, follow=True)
            builder.files.append(FileSyncItem(entry.guest, entry.host, entry.mode))
        else:
            builder.warn(
                f"file_sync: skipped {builder.show(entry.host)}: not a regular file or directory"
            )
    return builder.plan()
