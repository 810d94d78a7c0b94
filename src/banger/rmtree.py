"""Remove a directory tree iteratively, never following a link, with a real error.

``shutil.rmtree`` on Python 3.11 recurses once per directory level: a pulled
layer with 1500 nested directories raises ``RecursionError`` (not an
``OSError``, so even ``ignore_errors=True`` lets it through), and its
descriptor-based walk holds one descriptor per level, so a deep tree also
runs out of descriptors under the usual 1024 limit. Everything bangerd and
the image code delete goes through :func:`remove_tree` instead:

- a loop over an explicit stack (no recursion, no depth limit): each level
  keeps only the names still to visit; at most two descriptors are open at
  a time. Climbing back up opens ``..`` of the emptied directory and checks
  it is the directory we came down from (device and inode), so a tree moved
  while we work is an error, never a removal somewhere else;
- every directory is opened with ``O_NOFOLLOW`` relative to its parent's
  descriptor; a symlink is unlinked, never followed;
- another filesystem mounted below is not entered: it is an error naming it;
- a directory the owner made unwritable or unreadable (a pulled layer's
  0555 ``/proc``, a 0000 directory) is given ``u+rwx`` first;
- a failure raises :class:`TreeRemovalError` naming the path and the reason.

Stdlib only: the root helper imports it (through the flattener) too.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from banger.errors import BangerError

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeRemovalError(BangerError):
    """A tree could not be removed: says which entry and why."""

    exit_code = 1


@dataclass
class _Level:
    """One directory on the way down: its name in the parent, identity, names left."""

    name: str
    dev: int
    ino: int
    names: list[str] = field(default_factory=list)


def _open_dir(name: str, parent_fd: int) -> int:
    """Open directory ``name`` under ``parent_fd`` without following a link; an
    unreadable directory (mode 0000, 0300…) is given u+rwx first."""
    try:
        return os.open(name, _O_DIR, dir_fd=parent_fd)
    except PermissionError:
        pfd = os.open(name, _O_PATH_DIR, dir_fd=parent_fd)
        try:
            mode = os.fstat(pfd).st_mode
            os.chmod(f"/proc/self/fd/{pfd}", stat.S_IMODE(mode) | stat.S_IRWXU)  # noqa: PTH101
        finally:
            os.close(pfd)
        return os.open(name, _O_DIR, dir_fd=parent_fd)


def _make_writable(fd: int) -> bool:
    """Give the directory ``fd`` u+wx; whether that changed anything."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & stat.S_IRWXU == stat.S_IRWXU:
        return False
    os.fchmod(fd, mode | stat.S_IRWXU)
    return True


def _unlink(name: str, fd: int, *, directory: bool) -> None:
    remove = os.rmdir if directory else os.unlink
    try:
        remove(name, dir_fd=fd)
    except PermissionError:
        if not _make_writable(fd):
            raise
        remove(name, dir_fd=fd)


def remove_tree(path: Path | str) -> None:
    """Remove ``path`` and everything below it; a missing ``path`` is fine.

    Raises :class:`TreeRemovalError` naming the entry that could not go.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TreeRemovalError(f"cannot remove {path}: {exc.strerror}") from None
    parent = path.parent
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TreeRemovalError(f"cannot remove {path}: {parent}: {exc.strerror}") from None
    try:
        if stat.S_ISDIR(st.st_mode):
            _remove_dir(path, parent_fd, st.st_dev)
            return
        try:
            _unlink(path.name, parent_fd, directory=False)
        except FileNotFoundError:
            pass  # gone already: the goal is met
        except OSError as exc:
            raise TreeRemovalError(f"cannot remove {path}: {exc.strerror}") from None
    finally:
        os.close(parent_fd)


def _remove_dir(top: Path, top_parent_fd: int, dev: int) -> None:
    stack: list[_Level] = []
    fd = -1
    entry = ""  # the name being worked on inside the directory on top of the stack

    def shown() -> Path:
        if not stack:
            return top
        return top.joinpath(*(level.name for level in stack[1:]), entry)

    def descend(name: str, parent_fd: int) -> None:
        nonlocal fd
        child = _open_dir(name, parent_fd)
        st = os.fstat(child)
        if st.st_dev != dev:
            os.close(child)
            raise TreeRemovalError(
                f"cannot remove {shown()}: another filesystem is mounted there",
                hint="unmount it first",
            )
        level = _Level(name, st.st_dev, st.st_ino)
        try:
            level.names = os.listdir(child)  # noqa: PTH208 - a descriptor
        except PermissionError:
            if not _make_writable(child):
                os.close(child)
                raise
            level.names = os.listdir(child)  # noqa: PTH208 - a descriptor
        if fd >= 0:
            os.close(fd)
        fd = child
        stack.append(level)

    try:
        try:
            descend(top.name, top_parent_fd)
        except FileNotFoundError:
            return
        while stack:
            level = stack[-1]
            if level.names:
                entry = level.names.pop()
                try:
                    st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        descend(entry, fd)
                        entry = ""
                    else:
                        _unlink(entry, fd, directory=False)
                except FileNotFoundError:
                    pass  # removed by someone else meanwhile
                continue
            # This directory is empty: climb to its parent and remove it there.
            stack.pop()
            entry = level.name
            if not stack:
                os.close(fd)
                fd = -1
                _unlink(level.name, top_parent_fd, directory=True)
                return
            up = os.open("..", _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = up
            st = os.fstat(up)
            expected = stack[-1]
            if (st.st_dev, st.st_ino) != (expected.dev, expected.ino):
                raise TreeRemovalError(
                    f"cannot remove {shown()}: the tree was moved while it was being removed"
                )
            _unlink(level.name, fd, directory=True)
            entry = ""
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise TreeRemovalError(f"cannot remove {shown()}: {reason}") from None
    finally:
        if fd >= 0:
            os.close(fd)


def discard_tree(path: Path | str) -> str | None:
    """:func:`remove_tree` for cleanups and undos: a failure is logged, not raised.

    Returns the error message (None when the tree is gone), so a caller that
    reports leftovers can say why.
    """
    try:
        remove_tree(path)
    except TreeRemovalError as exc:
        log.warning("%s", exc.message)
        return exc.message
    return None


async def discard_tree_async(path: Path | str) -> None:
    """:func:`discard_tree` in a worker thread, for undo stacks (their steps return None)."""
    await asyncio.to_thread(discard_tree, path)
