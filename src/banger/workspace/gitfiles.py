"""Which host files make up a workspace copy: git decides, we only walk ``.git``.

A workspace is the repository's ``.git`` directory (history, branches, the
current branch, the index) plus the working-tree files git would show:
tracked files and untracked files that are not ignored
(``git ls-files -z --cached --others --exclude-standard``). Ignored files stay
on the host. Tracked files deleted in the working tree are simply absent.

Nothing here follows a symlink: symlinks become symlink entries, and a file
below a directory that has been replaced by a symlink is skipped (it would
read outside the repository).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from banger import proc
from banger.errors import BangerError, CommandError, InvalidArgument, NotFound

GIT_DIR = ".git"


class NotARepository(NotFound):
    """The path is not inside a git working tree."""


@dataclass(frozen=True)
class Member:
    """One archive entry: ``arcname`` relative to the repository root."""

    arcname: str
    path: Path
    kind: str  # "file" | "dir" | "symlink"
    size: int = 0


@dataclass(frozen=True)
class Listing:
    root: Path
    root_mode: int
    members: tuple[Member, ...]
    warnings: tuple[str, ...]

    @property
    def files(self) -> int:
        return sum(1 for m in self.members if m.kind != "dir")

    @property
    def total_bytes(self) -> int:
        return sum(m.size for m in self.members)


def find_repository(path: Path, command: str = "prepare") -> Path:
    """The top of the git working tree containing ``path`` (``git rev-parse --show-toplevel``).

    ``command`` is the ``workspace`` command asking, for the hint.
    """
    if not path.exists():
        raise NotFound(f"path not found: {path}")
    where = path if path.is_dir() else path.parent
    try:
        result = proc.run(["git", "rev-parse", "--show-toplevel"], cwd=where)
    except CommandError as exc:
        raise NotARepository(
            f"{path} is not inside a git repository",
            hint=f"run it from a repository, or name one: banger workspace {command} VM PATH",
        ) from exc
    top = result.out.rstrip("\n")
    if not top:
        raise NotARepository(f"{path} is inside a bare repository or a .git directory")
    return Path(top)


def _submodules(root: Path) -> list[str]:
    """Paths of the repository's submodules (gitlinks in its index)."""
    out = proc.run(["git", "ls-files", "-z", "--stage"], cwd=root).stdout
    found: list[str] = []
    for raw in out.split(b"\0"):
        meta, _, path = raw.partition(b"\t")
        if meta.startswith(b"160000 ") and path:
            found.append(os.fsdecode(path))
    return found


def _listed_paths(root: Path) -> list[str]:
    argv = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    out = proc.run(argv, cwd=root).stdout
    seen: dict[str, None] = {}
    for raw in out.split(b"\0"):
        if raw:
            seen.setdefault(os.fsdecode(raw), None)  # a conflicted path is listed per stage
    return list(seen)


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


@dataclass
class _Collector:
    root: Path
    members: list[Member]
    warnings: list[str]
    dirs: set[str]

    def add(self, arcname: str, st: os.stat_result) -> bool:
        kind = _kind(st.st_mode)
        if kind is None:
            self.warnings.append(f"skipped {arcname}: not a regular file, directory or symlink")
            return False
        size = st.st_size if kind == "file" else 0
        self.members.append(Member(arcname, self.root / arcname, kind, size))
        if kind == "dir":
            self.dirs.add(arcname)
        return True

    def parents_ok(self, arcname: str) -> bool:
        """Add missing parent directories; False if one is not a real directory."""
        parts = arcname.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent in self.dirs:
                continue
            try:
                st = (self.root / parent).lstat()
            except FileNotFoundError:
                return False
            if not stat.S_ISDIR(st.st_mode):
                self.warnings.append(f"skipped {arcname}: {parent} is not a directory")
                return False
            self.add(parent, st)
        return True


def _walk_git_dir(c: _Collector) -> None:
    top = c.root / GIT_DIR
    try:
        top_st = top.lstat()
    except FileNotFoundError:
        raise NotARepository(f"{c.root} has no .git directory") from None
    if not stat.S_ISDIR(top_st.st_mode):
        raise InvalidArgument(
            f"{top} is a file, not a directory: linked worktrees and submodule checkouts "
            "cannot be copied as a workspace",
            hint="prepare the main working tree of the repository instead",
        )
    c.add(GIT_DIR, top_st)
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        rel = Path(dirpath).relative_to(c.root).as_posix()
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            arcname = f"{rel}/{name}"
            try:
                st = (c.root / arcname).lstat()
            except FileNotFoundError:
                continue  # git removed a lock or temp file while we looked
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                continue  # e.g. the fsmonitor daemon's socket: meaningless in the guest
            c.add(arcname, st)


def _raise(exc: OSError) -> None:
    raise BangerError(f"cannot read {exc.filename}: {exc.strerror}") from exc


def _add_tree(c: _Collector, base: str) -> None:
    """The working-tree files git shows in the (sub)repository at ``base`` ("" = the top);
    an initialised submodule's files too, with its ``.git`` link (its history is in
    the superproject's ``.git/modules``, copied with ``.git``)."""
    top = c.root / base if base else c.root
    prefix = f"{base}/" if base else ""
    submodules = {prefix + p for p in _submodules(top)}
    for listed in _listed_paths(top):
        arcname = prefix + listed
        if arcname.rstrip("/") in submodules:
            _add_submodule(c, arcname.rstrip("/"))
            continue
        if listed.endswith("/"):
            # ls-files shows an untracked nested repository as "dir/": not ours to copy
            c.warnings.append(f"skipped {arcname}: a nested git repository")
            continue
        if arcname == GIT_DIR or arcname.startswith(GIT_DIR + "/") or arcname in c.dirs:
            continue
        if not c.parents_ok(arcname):
            continue
        try:
            st = (c.root / arcname).lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue  # tracked but deleted in the working tree
        c.add(arcname, st)


def _add_submodule(c: _Collector, arcname: str) -> None:
    link = f"{arcname}/{GIT_DIR}"
    try:
        st = (c.root / link).lstat()
    except (FileNotFoundError, NotADirectoryError):
        # not initialised: an empty directory, as `git clone` without --recurse leaves it
        if c.parents_ok(arcname) and arcname not in c.dirs:
            with contextlib.suppress(FileNotFoundError):
                c.add(arcname, (c.root / arcname).lstat())
        return
    if not stat.S_ISREG(st.st_mode):
        c.warnings.append(
            f"skipped submodule {arcname}: its .git is a directory (run `git submodule"
            " absorbgitdirs` to keep its history in the superproject's .git)"
        )
        return
    if not c.parents_ok(link):
        return
    if arcname not in c.dirs:
        c.add(arcname, (c.root / arcname).lstat())
    c.add(link, st)
    _add_tree(c, arcname)


def list_workspace(root: Path) -> Listing:
    """Everything to copy from the repository at ``root`` (its top level), ``.git`` first;
    initialised submodules come with their working trees."""
    c = _Collector(root, [], [], set())
    _walk_git_dir(c)
    _add_tree(c, "")
    return Listing(root, root.lstat().st_mode & 0o7777, tuple(c.members), tuple(c.warnings))
