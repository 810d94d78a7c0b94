"""Where the helper does filesystem work as root: a directory the owner cannot touch.

The owner is assumed hostile and racing (docs/SECURITY.md). Every directory
the owner can write — its state directory, ``tmp/``, the staging directory
the daemon made for an op — can have any component renamed or swapped for a
symlink between the moment the helper checks a path and the moment it uses
it. So the helper never works *by path* under such a directory:

1. :func:`open_owner_dir` opens the directory it was given one component
   at a time from ``/``, each with ``O_NOFOLLOW|O_DIRECTORY`` relative to the
   descriptor of the one before (a symlink anywhere is refused, not
   followed), and checks on the final descriptor that the owner owns it.
   Whatever the owner did to the path, the helper now holds *a* directory
   of the owner's: the worst a race achieves is choosing which one.
2. :meth:`RootStage.create` makes a fresh ``root-<hex>`` directory inside it,
   mode 0700, and opens it the same way; the descriptor is checked to be
   root's, 0700, empty and on the same filesystem (an owner who swapped in a
   directory of its own is refused). From here on nothing below it can be
   renamed, replaced or linked by the owner: that takes write permission on
   the directory, which only root has.
3. All work happens below :attr:`RootStage.path`, ``/proc/<helper
   pid>/fd/<n>``: a path that reaches the directory through the descriptor,
   not through the owner's path components, and that works for the helper
   and for every command it starts. A command that canonicalises its
   arguments (mmdebstrap does, with ``abs_path``) would turn that back into
   the owner's path; such a command gets the stage bound at a fixed root-only
   mount point in a private mount namespace instead
   (:mod:`banger.helper.bindexec`).
4. :meth:`RootStage.hand_over` ends the op: everything but the result is
   removed (by descriptor, never into another filesystem), the result's
   directories are given to the owner, and last the stage itself
   (``fchown``/``fchmod`` on the descriptor). After that the helper never
   touches it again. A failed op empties the stage and hands over the empty
   directory, so the owner can delete it.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType

from banger.errors import BangerError, InvalidArgument

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
STAGE_PREFIX = "root-"


class StageError(BangerError):
    """The root-only stage could not be made or was tampered with."""

    exit_code = 1


def walk_nofollow(path: str) -> int:
    """A descriptor of directory ``path``, opened one component at a time from ``/``
    with ``O_NOFOLLOW``: a symlink anywhere on the path raises, it is never followed."""
    fd = os.open("/", _O_DIR)
    try:
        for part in [p for p in path.split("/") if p]:
            if part in (".", ".."):
                raise OSError(22, "not a normalised path", path)
            child = os.open(part, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir_nofollow(path: Path, what: str) -> int:
    """A descriptor of directory ``path``, walked from ``/`` one component at a time
    with ``O_NOFOLLOW``: a symlink anywhere on the path is refused, not followed.

    ``path`` must be absolute and normalised (the validators see to that);
    ``what`` names the request field in errors.
    """
    if not path.is_absolute() or any(p in (".", "..") for p in path.parts):
        raise InvalidArgument(f"{what}: {path} must be an absolute, normalised path")
    try:
        return walk_nofollow(str(path))
    except OSError as exc:  # ELOOP/ENOTDIR: a symlink or a file where a dir was
        raise InvalidArgument(f"{what}: {path}: not a plain directory ({exc.strerror})") from None


def open_owner_dir(path: Path, owner_uid: int, what: str) -> int:
    """:func:`open_dir_nofollow`, and the directory must be the owner's."""
    fd = open_dir_nofollow(path, what)
    if os.fstat(fd).st_uid != owner_uid:
        os.close(fd)
        raise InvalidArgument(f"{what}: {path} is not the owner's directory")
    return fd


def empty_dir(dir_fd: int, *, keep: frozenset[str] = frozenset()) -> int:
    """Delete everything in ``dir_fd`` except the names in ``keep``; how many entries went.

    By descriptor, iteratively (no depth limit, no recursion), never
    following a symlink and never entering another filesystem: a mount point
    below is an error, not something to empty. At most two descriptors are
    open besides ``dir_fd`` whatever the depth (a pulled layer may nest 1500
    directories; one descriptor per level ran out at the usual limit of
    1024): each level keeps only its remaining names, and climbing back up
    opens ``..`` and checks it is the directory we came down from. Nobody
    can move anything meanwhile: below the root-only stage only root writes.
    """
    top = os.fstat(dir_fd)
    dev = top.st_dev
    removed = 0
    # Each level: its name in its parent, its (dev, inode), the names still to visit.
    levels: list[tuple[str, tuple[int, int], list[str]]] = [
        ("", (top.st_dev, top.st_ino), [n for n in os.listdir(dir_fd) if n not in keep])
    ]
    fd = dir_fd
    try:
        while levels:
            name_in_parent, _ident, names = levels[-1]
            if names:
                name = names.pop()
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=fd)
                    removed += 1
                    continue
                if st.st_dev != dev:
                    raise StageError(f"{name} is a mount point inside a staging directory")
                child = os.open(name, _O_DIR, dir_fd=fd)
                cst = os.fstat(child)
                if cst.st_dev != dev:
                    os.close(child)
                    raise StageError(f"{name} is a mount point inside a staging directory")
                if fd != dir_fd:
                    os.close(fd)
                fd = child
                levels.append((name, (cst.st_dev, cst.st_ino), os.listdir(child)))  # noqa: PTH208
                continue
            levels.pop()
            if not levels:
                break
            parent = os.open("..", _O_DIR, dir_fd=fd)
            pst = os.fstat(parent)
            if (pst.st_dev, pst.st_ino) != levels[-1][1]:
                os.close(parent)
                raise StageError(f"{name_in_parent} moved while its staging directory was emptied")
            os.close(fd)
            if len(levels) == 1:  # back at the top: use the caller's descriptor
                os.close(parent)
                fd = dir_fd
            else:
                fd = parent
            os.rmdir(name_in_parent, dir_fd=fd)
            removed += 1
    finally:
        if fd != dir_fd:
            os.close(fd)
    return removed


class RootStage:
    """A root-only directory inside an owner directory, held by descriptor (see above)."""

    def __init__(self, name: str, fd: int, owner: tuple[int, int], shown_as: Path) -> None:
        self.name = name
        self.fd = fd
        self.owner = owner
        self.shown_as = shown_as
        self.handed_over = False

    @classmethod
    def create(cls, parent_fd: int, owner: tuple[int, int], parent: Path) -> RootStage:
        """A new stage in ``parent_fd``; ``parent`` is that directory's path, for messages."""
        name = STAGE_PREFIX + secrets.token_hex(4)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _O_DIR, dir_fd=parent_fd)
        st = os.fstat(fd)
        if (
            st.st_uid != 0
            or stat.S_IMODE(st.st_mode) != 0o700
            or st.st_nlink != 2
            or st.st_dev != os.fstat(parent_fd).st_dev
            or os.listdir(fd)  # noqa: PTH208 - by descriptor
        ):
            os.close(fd)
            raise StageError(f"the staging directory {name} was replaced while it was made")
        return cls(name, fd, owner, parent / name)

    @property
    def path(self) -> Path:
        """The stage, reached through the helper's descriptor: for it and its children."""
        return Path(f"/proc/{os.getpid()}/fd/{self.fd}")

    def hand_over(self, result: str | None) -> None:
        """Give the owner ``result`` (a directory in the stage, or nothing) and the stage.

        ``result`` itself is chowned here; what it holds must be the owner's
        already (``publish_image(owner=…)`` gives the owner each image directory).
        """
        empty_dir(self.fd, keep=frozenset({result}) if result else frozenset())
        if result is not None:
            result_fd = os.open(result, _O_DIR, dir_fd=self.fd)
            try:
                os.fchown(result_fd, *self.owner)
                os.fchmod(result_fd, 0o755)
            finally:
                os.close(result_fd)
        os.fchown(self.fd, *self.owner)
        os.fchmod(self.fd, 0o755)
        self.handed_over = True

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> RootStage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, BangerError):
            # Errors name the stage as the user knows it, not as /proc/<pid>/fd/<n>.
            exc.message = exc.message.replace(str(self.path), str(self.shown_as))
        try:
            if not self.handed_over:
                # A failed op: nothing of root's stays behind, the owner deletes the rest.
                try:
                    self.hand_over(None)
                except (OSError, StageError) as cleanup:
                    if exc is None:
                        raise
                    # The op's own error is the one to report; this one is logged.
                    log.warning("cannot empty staging directory %s: %s", self.name, cleanup)
        finally:
            self.close()
