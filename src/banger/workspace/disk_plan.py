"""Pure planning of a workspace written onto the work disk: entries, debugfs commands, room.

The host side (:mod:`.onto_disk`) turns a :class:`~banger.workspace.gitfiles.Listing`
into :class:`HostEntry` values (lstat, readlink: never following a link); this
module maps them onto paths of the disk image and renders the debugfs commands
that create them. Nothing here reads a file or runs a command.

What the commands give, checked against e2fsprogs 1.47 (and read back after
every write, :func:`expectations`):

- ``write SRC DEST`` creates a regular file owned by 0:0 (root, the user
  ``workspace prepare`` unpacks as) with the permission bits of SRC as opened
  (the writer passes ``/proc/<pid>/fd/<n>`` of a file it opened with
  ``O_NOFOLLOW``, so a file swapped for a symlink is never followed);
- ``mkdir`` creates 0:0 (the mode is set after), ``symlink`` 0:0 mode 0777;
- ``set_inode_field P mtime @SECONDS`` keeps the host's mtime, as ``tar -p`` does;
  directories get theirs last (adding entries changes a directory's mtime).

Names debugfs cannot express (a ``"`` or a control character, anywhere in the
path or a symlink's target) raise :class:`Unwritable`: the caller then copies
the workspace over SSH after boot instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from banger.config.file_sync import GUEST_HOME
from banger.disk.debugfs_script import Command, Expect, image_path, quote
from banger.disk.debugfs_script import _check_text as check_text
from banger.errors import BangerError, InvalidArgument

Kind = Literal["file", "dir", "symlink"]

#: ext4 keeps a symlink target shorter than this in the inode itself (no block).
FAST_SYMLINK_MAX = 60
#: Margin over the computed blocks: extent-tree blocks of fragmented files, htree
#: blocks of large directories.
ROOM_MARGIN = 1.02
#: Directory entry overhead in bytes (inode, rec_len, name_len, type), rounded up.
DIRENT_OVERHEAD = 12
MAX_MTIME = 2**31 - 1


class Unwritable(InvalidArgument):
    """A workspace path or symlink target a debugfs script cannot express."""


@dataclass(frozen=True)
class HostEntry:
    """One listed member as lstat saw it; ``arcname`` is relative to the repository."""

    arcname: str
    kind: Kind
    mode: int  # permission bits
    mtime: int
    size: int = 0
    target: str = ""  # symlinks
    source: Path | None = None  # files


@dataclass(frozen=True)
class DiskEntry:
    """A :class:`HostEntry` at its path in the disk image."""

    path: str
    kind: Kind
    mode: int
    mtime: int
    size: int = 0
    target: str = ""
    source: Path | None = None


def disk_root(dest: PurePosixPath, guest_home: PurePosixPath = GUEST_HOME) -> str:
    """The guest destination as a path on the work disk, which is mounted at ``guest_home``."""
    try:
        rel = dest.relative_to(guest_home)
    except ValueError:
        raise InvalidArgument(
            f"workspace path: {str(dest)!r} is not on the work disk ({guest_home})",
            hint=f"a workspace written before boot goes under {guest_home}",
        ) from None
    if not rel.parts:
        raise InvalidArgument(f"workspace path: {str(dest)!r} is the home itself")
    return image_path("/" + rel.as_posix(), "workspace path")


def plan_entries(root: HostEntry, members: Sequence[HostEntry], base: str) -> list[DiskEntry]:
    """``root`` (the repository directory) at ``base`` and every member below it.

    Directories come first, parents before children; then files and symlinks in
    listing order. A name or target debugfs cannot express raises :class:`Unwritable`
    naming it; a path listed twice is planned once.
    """
    base = image_path(base, "workspace path")
    seen: set[str] = set()
    dirs: list[DiskEntry] = [DiskEntry(base, "dir", root.mode, root.mtime)]
    rest: list[DiskEntry] = []
    for m in members:
        try:
            path = image_path(f"{base}/{m.arcname}", "workspace file")
            if m.kind == "symlink":
                check_text(m.target, f"symlink target of {m.arcname!r}")
        except InvalidArgument as exc:
            raise Unwritable(exc.message, exc.hint) from None
        if path in seen:
            continue
        seen.add(path)
        entry = DiskEntry(path, m.kind, m.mode, m.mtime, m.size, m.target, m.source)
        (dirs if m.kind == "dir" else rest).append(entry)
    dirs.sort(key=lambda e: e.path.count("/"))  # stable: listing order within a depth
    return dirs + rest


def _mtime(entry: DiskEntry) -> Command:
    when = min(max(entry.mtime, 0), MAX_MTIME)
    return Command(f"set_inode_field {quote(entry.path)} mtime @{when}")


def dir_commands(entries: Sequence[DiskEntry]) -> list[Command]:
    """``mkdir`` and the mode of every directory (parents first, as planned)."""
    out: list[Command] = []
    for e in entries:
        if e.kind == "dir":
            out.append(Command(f"mkdir {quote(e.path)}"))
            out.append(Command(f"set_inode_field {quote(e.path)} mode 0{0o40000 | e.mode:o}"))
    return out


def leaf_commands(entries: Sequence[DiskEntry], sources: Mapping[str, str]) -> list[Command]:
    """Files (read from ``sources[path]``, a validated host path) and symlinks, with mtimes.

    A file without a source (gone from the host since it was listed) is left out.
    """
    out: list[Command] = []
    for e in entries:
        if e.kind == "file":
            src = sources.get(e.path)
            if src is None:
                continue
            out.append(Command(f"write {quote(src)} {quote(e.path)}"))
        elif e.kind == "symlink":
            out.append(Command(f"symlink {quote(e.path)} {quote(e.target)}"))
        else:
            continue
        out.append(_mtime(e))
    return out


def finish_commands(entries: Sequence[DiskEntry]) -> list[Command]:
    """Directory mtimes, deepest first, once nothing is added below them."""
    dirs = [e for e in entries if e.kind == "dir"]
    return [_mtime(e) for e in sorted(dirs, key=lambda e: -e.path.count("/"))]


def expectations(entries: Sequence[DiskEntry], sizes: Mapping[str, int]) -> list[Expect]:
    """What the image must hold afterwards: type, mode, owner 0:0, and file sizes
    (``sizes``: as read when the file was opened; files absent from it were skipped)."""
    out: list[Expect] = []
    for e in entries:
        if e.kind == "file":
            if e.path in sizes:
                out.append(Expect(e.path, "file", e.mode, 0, 0, size=sizes[e.path]))
        elif e.kind == "symlink":
            out.append(Expect(e.path, "symlink", None, 0, 0, size=len(e.target.encode())))
        else:
            out.append(Expect(e.path, "dir", e.mode, 0, 0))
    return out


@dataclass(frozen=True)
class Room:
    blocks: int
    inodes: int


def room_needed(entries: Sequence[DiskEntry], block_size: int) -> Room:
    """Blocks and inodes the entries take on an ext4 with ``block_size`` (a slight
    overestimate: data blocks, directory blocks, long symlink targets, a margin)."""
    blocks = 0
    names: dict[str, int] = {}
    for e in entries:
        parent = str(PurePosixPath(e.path).parent)
        names[parent] = names.get(parent, 0) + len(PurePosixPath(e.path).name) + DIRENT_OVERHEAD
        if e.kind == "file":
            blocks += -(-e.size // block_size)
        elif e.kind == "symlink" and len(e.target.encode()) >= FAST_SYMLINK_MAX:
            blocks += 1
    for e in entries:
        if e.kind == "dir":
            blocks += max(1, -(-names.get(e.path, 0) // block_size))
    return Room(int(blocks * ROOM_MARGIN) + 16, len(entries))


class NoRoom(BangerError):
    http_status = 507


def check_room(need: Room, free_blocks: int, free_inodes: int, block_size: int) -> None:
    """One-line error naming both sizes when the disk cannot take the workspace."""
    mib = 1024 * 1024
    if need.blocks > free_blocks:
        raise NoRoom(
            f"workspace: needs {need.blocks * block_size / mib:.1f} MiB on the work disk, "
            f"which has {free_blocks * block_size / mib:.1f} MiB free",
            hint="give the VM a larger work disk (--disk-size), or use --no-workspace",
        )
    if need.inodes > free_inodes:
        raise NoRoom(
            f"workspace: needs {need.inodes} inodes on the work disk, which has {free_inodes} free",
            hint="give the VM a larger work disk (--disk-size), or use --no-workspace",
        )
