"""The helper's empty_dir on a 1500-deep tree at the usual descriptor limit (issue #22
item 3): it held one descriptor per level and failed with EMFILE under a soft limit of
1024 (systemd's default, sudo's usual); now at most two besides the caller's."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from banger.helper.rootstage import StageError, empty_dir


def _deep(top_fd: int, depth: int) -> None:
    fd = os.dup(top_fd)
    try:
        for _ in range(depth):
            os.mkdir("usr", dir_fd=fd)
            child = os.open("usr", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink("/etc", "escape", dir_fd=fd)  # unlinked, never followed
        os.close(os.open("file", os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_1500_levels_under_a_soft_limit_of_256_descriptors(tmp_path: Path) -> None:
    (tmp_path / "stage" / "kept").mkdir(parents=True)
    top = os.open(tmp_path / "stage", os.O_RDONLY | os.O_DIRECTORY)
    try:
        _deep(top, 1500)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        try:
            removed = empty_dir(top, keep=frozenset({"kept"}))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        os.close(top)
    assert removed == 1502
    assert os.listdir(tmp_path / "stage") == ["kept"]
    assert Path("/etc/passwd").exists()


def test_a_directory_on_another_filesystem_is_refused_not_emptied(tmp_path: Path) -> None:
    # /proc/self is another filesystem; a symlink to it is unlinked, a bind is refused.
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    from banger import proc

    stage = tmp_path / "stage"
    (stage / "a" / "b").mkdir(parents=True)
    proc.run(["mount", "-t", "tmpfs", "tmpfs", str(stage / "a" / "b")])
    try:
        (stage / "a" / "b" / "precious").write_text("x")
        top = os.open(stage, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(StageError, match="mount point"):
                empty_dir(top)
        finally:
            os.close(top)
        assert (stage / "a" / "b" / "precious").exists()
    finally:
        proc.run(["umount", str(stage / "a" / "b")])
