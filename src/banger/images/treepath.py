"""Paths inside a root tree, resolved the way the guest would resolve them.

Finalize runs as root on trees that may come from anywhere (a registered
tarball, a foreign rootfs). A symlink in such a tree is meant for the guest:
``/etc/ssh -> /srv/evil`` or ``/var/run -> /run`` must resolve inside the
tree, never on the host. :func:`resolve` follows symlinks chroot-style (an
absolute target restarts at the tree root, ``..`` stops at it), and the
writers here replace a final symlink instead of writing through it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from banger.errors import InvalidArgument
from banger.rmtree import remove_tree

_MAX_SYMLINKS = 40  # the kernel's own limit (MAXSYMLINKS)


def _parts(guest_path: str) -> list[str]:
    path = PurePosixPath(guest_path)
    if not path.is_absolute():
        raise ValueError(f"guest path must be absolute: {guest_path}")
    return [p for p in path.parts[1:] if p not in ("", ".")]


def resolve(tree: Path, guest_path: str, *, follow_last: bool = True) -> Path:
    """The host path of ``guest_path`` in ``tree``, every symlink kept inside ``tree``.

    With ``follow_last=False`` a symlink in the last component is not followed
    (the caller means the link itself, e.g. to replace it).
    """
    root = tree
    todo = _parts(guest_path)
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        candidate = root.joinpath(*done, name)
        if candidate.is_symlink() and (todo or follow_last):
            links += 1
            if links > _MAX_SYMLINKS:
                raise InvalidArgument(f"too many levels of symlinks in the image at {guest_path}")
            target = str(candidate.readlink())
            if target.startswith("/"):
                done = []
            todo = [p for p in PurePosixPath(target).parts if p not in ("/", "", ".")] + todo
            continue
        done.append(name)
    return root.joinpath(*done)


def exists(tree: Path, guest_path: str) -> bool:
    return os.path.lexists(resolve(tree, guest_path))


def make_dirs(tree: Path, guest_path: str, mode: int = 0o755) -> Path:
    """Create ``guest_path`` and missing parents (root-owned, ``mode``)."""
    target = resolve(tree, guest_path)
    current = tree
    # resolve() checked every existing component is not a symlink, so this
    # walk stays inside the tree.
    for part in target.relative_to(tree).parts:
        current = current / part
        if not os.path.lexists(current):
            current.mkdir(mode=mode)
            os.chown(current, 0, 0)
            current.chmod(mode)
        elif current.is_symlink() or not current.is_dir():
            raise InvalidArgument(
                f"the image has a file where a directory is expected: /{current.relative_to(tree)}"
            )
    return target


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        remove_tree(path)


def write_file(tree: Path, guest_path: str, content: str | bytes, mode: int = 0o644) -> Path:
    """Write a root-owned regular file, replacing whatever was at ``guest_path``."""
    parent = make_dirs(tree, str(PurePosixPath(guest_path).parent))
    target = parent / PurePosixPath(guest_path).name
    if os.path.lexists(target):
        _remove(target)
    data = content.encode() if isinstance(content, str) else content
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return target


def symlink(tree: Path, guest_path: str, target: str) -> Path:
    """Create (or replace with) a symlink at ``guest_path`` pointing to ``target``."""
    parent = make_dirs(tree, str(PurePosixPath(guest_path).parent))
    link = parent / PurePosixPath(guest_path).name
    if os.path.lexists(link):
        _remove(link)
    link.symlink_to(target)
    os.lchown(link, 0, 0)
    return link


def remove(tree: Path, guest_path: str) -> bool:
    """Remove the file, link or directory at ``guest_path``; True if something was there."""
    path = resolve(tree, guest_path, follow_last=False)
    if not os.path.lexists(path):
        return False
    _remove(path)
    return True


def is_regular_file(tree: Path, guest_path: str) -> bool:
    path = resolve(tree, guest_path)
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return False
