"""The state record of a workspace copy, computed on the host (no guest needed).

After a prepare, the guest copy's ``.git/banger.workspace`` holds ``<HEAD> <tree>``
(:func:`banger.workspace.guest_scripts.record_state`): ``tree`` is what
``git add -A`` on a copy of the index gives for the working files. When the copy
is written onto the work disk before boot (:mod:`banger.workspace.onto_disk`),
the same record is computed here, over exactly the files the listing copies, so
the guard and ``workspace export`` behave as after an SSH prepare.

The guest's git sees only the repository's own configuration (its ``~`` has no
filters or ``autocrlf``), so the host's system and global configuration are
left out here too. New objects (the tree, and blobs of untracked or modified
files that git has not stored yet) are written to a private object directory,
never the host repository's, and copied into the guest copy's ``.git/objects``
with it: the guard's ``git diff`` between the recorded tree and the current one
reads them, as it reads the objects an SSH prepare's ``git add`` wrote.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from banger import proc
from banger.workspace.gitfiles import GIT_DIR, Listing, Member


@dataclass(frozen=True)
class HostState:
    head: str  # a commit id, or "none" for a repository without commits
    tree: str
    #: loose objects git wrote for the record, as (".git/objects/xx/yyyy", host file)
    objects: tuple[tuple[str, Path], ...]

    @property
    def record(self) -> bytes:
        """The record file's content, as the guest script writes it."""
        return f"{self.head} {self.tree}\n".encode()


def _submodule_roots(members: Sequence[Member]) -> set[str]:
    """Initialised submodules: their ``.git`` link is a member (a file)."""
    return {
        m.arcname[: -len("/" + GIT_DIR)]
        for m in members
        if m.kind == "file" and m.arcname.endswith("/" + GIT_DIR) and "/" in m.arcname
    }


def worktree_paths(members: Sequence[Member]) -> tuple[list[str], set[str]]:
    """The superproject's working files (not ``.git``, not inside a submodule) and
    the initialised submodules' roots."""
    subs = _submodule_roots(members)
    paths: list[str] = []
    for m in members:
        name = m.arcname
        if m.kind == "dir" or name == GIT_DIR or name.startswith(GIT_DIR + "/"):
            continue
        if any(name == s or name.startswith(s + "/") for s in subs):
            continue
        paths.append(name)
    return paths, subs


def _git(root: Path, env: dict[str, str], *args: str, input: bytes | None = None) -> str:
    return proc.run(["git", *args], cwd=root, env=env, input=input).out


def compute_state(listing: Listing, work: Path) -> HostState:
    """``<HEAD> <tree>`` of the copy ``listing`` makes; ``work`` is an empty private
    directory (the temporary index and object directory live there).

    Blocking: call it in a thread.
    """
    root = listing.root
    objects = work / "objects"
    objects.mkdir(mode=0o700)
    env = {
        "GIT_INDEX_FILE": str(work / "index"),
        "GIT_OBJECT_DIRECTORY": str(objects),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": _alternate(root / GIT_DIR / "objects"),
        # the guest copy knows only the repository's own configuration
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    head = _git(root, env, "rev-parse", "--verify", "-q", "HEAD^{commit}").strip() or "none"
    paths, subs = worktree_paths(listing.members)
    # HEAD's entries without stat data: every listed file is hashed again here,
    # as in the guest, whose copied index never matches the new files' stat data
    if head != "none":
        _git(root, env, "read-tree", head)
    listed = set(paths) | subs
    gitlinks = _gitlinks(root, env)
    present = [p for p in _index_paths(root, env) if p not in listed and p not in gitlinks]
    if present:  # tracked, but not in the working tree: git add -A drops them
        _git(root, env, "update-index", "--force-remove", "-z", "--stdin",
             input=_nul(present))  # fmt: skip
    if paths:
        _git(root, env, "update-index", "--add", "-z", "--stdin", input=_nul(paths))
    for sub in sorted(subs):
        commit = proc.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=root / sub,
                          check=False).out.strip()  # fmt: skip
        if commit:
            _git(root, env, "update-index", "--add", "--cacheinfo", f"160000,{commit},{sub}")
    tree = _git(root, env, "write-tree").strip()
    written: list[tuple[str, Path]] = []
    for sub_dir in sorted(objects.iterdir()):
        if len(sub_dir.name) == 2 and sub_dir.is_dir():
            for obj in sorted(sub_dir.iterdir()):
                written.append((f"{GIT_DIR}/objects/{sub_dir.name}/{obj.name}", obj))
    return HostState(head, tree, tuple(written))


def _alternate(path: Path) -> str:
    """``path`` as one entry of git's ``:``-separated alternates variable (C-quoted
    when it holds a ``:``, a quote or a backslash, as git reads it)."""
    text = str(path)
    if not any(c in text for c in ':"\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nul(paths: Sequence[str]) -> bytes:
    return b"".join(os.fsencode(p) + b"\0" for p in paths)


def _index_paths(root: Path, env: dict[str, str]) -> list[str]:
    out = proc.run(["git", "ls-files", "-z"], cwd=root, env=env).stdout
    return [os.fsdecode(p) for p in out.split(b"\0") if p]


def _gitlinks(root: Path, env: dict[str, str]) -> set[str]:
    """Submodule entries of the temporary index (an uninitialised one keeps its gitlink)."""
    out = proc.run(["git", "ls-files", "-z", "--stage"], cwd=root, env=env).stdout
    found: set[str] = set()
    for raw in out.split(b"\0"):
        meta, _, path = raw.partition(b"\t")
        if meta.startswith(b"160000 ") and path:
            found.add(os.fsdecode(path))
    return found
