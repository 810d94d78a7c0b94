"""The helper's ``remove_staging`` op: delete what a killed helper left in the owner's tmp/.

``image_build`` and ``image_pull`` work as root inside a staging directory
the daemon made, ``<state>/tmp/register-<hex>`` or ``<state>/tmp/pull-<hex>``,
and hand everything to the owner when they finish. A helper killed mid-op
hands nothing over: root-owned files stay behind that the owner cannot
delete. The daemon's startup reconciliation asks for exactly this::

    {"op": "remove_staging", "args": {"path": "<state>/tmp/pull-1a2b3c4d"}}

- ``path`` lies inside an ``--allow-root`` directory with no symlink
  component, its parent is named ``tmp`` and its name is
  ``register-<8 hex>`` or ``pull-<8 hex>``: nothing else can be named;
- the directory is the owner's (the daemon made it);
- no running op of this helper works in it (:func:`in_use`);
- the directory is opened by walking its path from ``/`` without following
  a symlink (:func:`banger.helper.rootstage.open_dir_nofollow`); the
  removal walks by descriptor, iteratively and without a depth limit that
  would strand a deep tree (``O_NOFOLLOW`` at every level, so a symlink the
  owner swaps in is unlinked, never followed) and refuses to enter another
  filesystem: a mount left under the directory is reported, not emptied.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banger.errors import Conflict, InvalidArgument
from banger.helper.rootstage import StageError, empty_dir, open_dir_nofollow
from banger.helper.validate import Context, OpSpec, checked_path
from banger.mountinfo import mounts_below

log = logging.getLogger(__name__)

OP = "remove_staging"
NAME = re.compile(r"(register|pull)-[0-9a-f]{8}")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_busy: set[Path] = set()
_busy_lock = threading.Lock()


@dataclass(frozen=True)
class RemoveStagingArgs:
    path: Path


def check_staging_path(ctx: Context, value: object) -> Path:
    path = checked_path(ctx, value, must_exist=True)
    if path.parent.name != "tmp" or not NAME.fullmatch(path.name):
        raise ValueError("must be <state>/tmp/register-<8 hex> or <state>/tmp/pull-<8 hex>")
    return path


SPEC = OpSpec(
    {"path": check_staging_path},
    RemoveStagingArgs,
    "remove a staging directory an interrupted image op left in the owner's tmp/",
)


@contextmanager
def in_use(path: Path) -> Iterator[None]:
    """Mark ``path`` as worked in by a running op: ``remove_staging`` refuses it meanwhile."""
    with _busy_lock:
        _busy.add(path)
    try:
        yield
    finally:
        with _busy_lock:
            _busy.discard(path)


def remove_staging(args: RemoveStagingArgs, owner_uid: int) -> dict[str, Any]:
    path = args.path
    with _busy_lock:
        if path in _busy:
            raise Conflict(f"{OP}: {path} is in use by a running image op of this helper")
    mounts = mounts_below(path)
    if mounts:
        raise Conflict(f"{OP}: {mounts[0]} is mounted under {path}; unmount it first")
    parent_fd = open_dir_nofollow(path.parent, f"{OP}.args.path")
    try:
        try:
            fd = os.open(path.name, _O_DIR, dir_fd=parent_fd)
        except OSError as exc:  # swapped for a symlink or a file since validation
            raise InvalidArgument(f"{OP}.args.path: {path}: {exc.strerror}") from None
        try:
            if os.fstat(fd).st_uid != owner_uid:
                raise InvalidArgument(f"{OP}.args.path: {path} is not the owner's directory")
            try:
                removed = empty_dir(fd)
            except StageError as exc:
                raise Conflict(f"{OP}: {path}: {exc.message}; unmount it first") from None
        finally:
            os.close(fd)
        os.rmdir(path.name, dir_fd=parent_fd)
    finally:
        os.close(parent_fd)
    log.info("%s: removed %s (%d entries)", OP, path, removed)
    return {"path": str(path), "removed": removed + 1}
