"""bangerd's startup cleanup removes a pull directory holding a 1500-deep tree
(issue #22 item 3, the daemon side): it used to raise RecursionError, which
reached the user as "internal error" and left the directory behind for good."""

from __future__ import annotations

import os
from pathlib import Path

from banger.daemon.images_cleanup import cleanup_image_leftovers
from banger.paths import Paths


def _deep(top: Path, depth: int) -> None:
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("usr", dir_fd=fd)
            child = os.open("usr", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink("/etc", "escape", dir_fd=fd)  # followed, it would empty /etc
    finally:
        os.close(fd)


def test_a_deep_pull_leftover_is_removed_at_start(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "cfg", tmp_path / "state", tmp_path / "cache", tmp_path / "run")
    stage = paths.tmp_dir / "pull-0123abcd" / "root-00ff" / "tree"
    stage.mkdir(parents=True)
    _deep(stage, 1500)
    result = cleanup_image_leftovers(paths)
    assert result.removed == [paths.tmp_dir / "pull-0123abcd"]
    assert list(paths.tmp_dir.iterdir()) == []
    assert Path("/etc/hostname").exists() or Path("/etc/passwd").exists()
