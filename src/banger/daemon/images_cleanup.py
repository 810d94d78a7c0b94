"""Startup cleanup of what an interrupted image operation left behind.

Images are built under temporary names and published by rename, so a daemon
killed mid-pull leaves only temporary directories, never a half image under
``images/`` (and no store row). At start, before serving, this removes:

- ``cache_dir/oci/pulls/*``: skopeo's per-pull OCI layouts (blobs already
  in the shared cache stay: each was renamed into place whole);
- ``tmp/build-*``, ``tmp/bundle-*``, ``tmp/register-*``, ``tmp/promote-*``,
  ``tmp/image-*.partial``: build, bundle-import, register, promote and
  publication staging directories;
- ``tmp/pull-*``: the helper's pull directories. If banger-helper still works
  in one (it holds ``helper.lock``; it notices the old daemon is gone at its
  next step, removes its work and hands the rest over), a background thread
  waits for that lock before deleting the directory.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from banger.paths import Paths
from banger.rmtree import discard_tree

log = logging.getLogger(__name__)

TMP_PATTERNS = ("build-*", "bundle-*", "register-*", "promote-*", "image-*.partial")
PULL_PATTERN = "pull-*"
HELPER_LOCK = "helper.lock"


@dataclass
class Cleanup:
    removed: list[Path] = field(default_factory=list)
    #: Pull directories the helper still holds; removed by ``waiter`` when it lets go.
    waiting: list[Path] = field(default_factory=list)
    waiter: threading.Thread | None = None


def _remove(path: Path, removed: list[Path]) -> None:
    # Deep trees (a pulled layer's 1500 nested directories) go too, and a
    # failure is logged with its real cause (banger.rmtree).
    problem = discard_tree(path)
    if problem is None and not os.path.lexists(path):
        removed.append(path)
    else:
        log.warning("could not remove leftover %s: %s", path, problem or "still there")


def helper_busy(pull_dir: Path) -> bool:
    try:
        fd = os.open(pull_dir / HELPER_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _wait_then_remove(pull_dir: Path) -> None:
    try:
        fd = os.open(pull_dir / HELPER_LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = None
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # blocks until the helper lets go
        finally:
            os.close(fd)
    done: list[Path] = []
    _remove(pull_dir, done)
    if done:
        log.info("removed leftover pull directory %s after the helper finished", pull_dir)


def cleanup_image_leftovers(paths: Paths) -> Cleanup:
    """Remove the leftovers listed in the module docstring; see :class:`Cleanup`."""
    result = Cleanup()
    pulls = paths.cache_dir / "oci" / "pulls"
    if pulls.is_dir():
        for layout in sorted(pulls.iterdir()):
            _remove(layout, result.removed)
    tmp = paths.tmp_dir
    if tmp.is_dir():
        for pattern in TMP_PATTERNS:
            for leftover in sorted(tmp.glob(pattern)):
                _remove(leftover, result.removed)
        for pull_dir in sorted(tmp.glob(PULL_PATTERN)):
            if helper_busy(pull_dir):
                result.waiting.append(pull_dir)
            else:
                _remove(pull_dir, result.removed)
    if result.waiting:
        waiting = list(result.waiting)

        def wait_all() -> None:
            for pull_dir in waiting:
                _wait_then_remove(pull_dir)

        # A daemon thread: it must never hold up the daemon's exit.
        result.waiter = threading.Thread(target=wait_all, name="pull-cleanup", daemon=True)
        result.waiter.start()
    if result.removed or result.waiting:
        log.info(
            "image leftovers: removed %d, waiting for the helper on %d",
            len(result.removed),
            len(result.waiting),
        )
    return result
