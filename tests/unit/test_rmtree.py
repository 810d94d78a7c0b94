"""banger.rmtree: iterative, link-safe tree removal with a real error (issue #22 item 3)."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from banger.rmtree import TreeRemovalError, discard_tree, remove_tree

NOBODY = 65534


def _deep_tree(top: Path, depth: int) -> None:
    """``depth`` nested directories with a file at the bottom, made by descriptor
    (the path of the deepest would exceed PATH_MAX with longer names)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d" * 20, dir_fd=fd)
            child = os.open("d" * 20, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_a_1500_deep_tree_is_removed_within_a_low_descriptor_limit(tmp_path: Path) -> None:
    top = tmp_path / "layer"
    _deep_tree(top, 1500)
    with pytest.raises(RecursionError):  # what bangerd used to do with it
        shutil.rmtree(top, ignore_errors=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        remove_tree(top)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not top.exists()
    assert list(tmp_path.iterdir()) == []


def test_symlinks_are_unlinked_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious")
    top = tmp_path / "tree"
    (top / "a").mkdir(parents=True)
    (top / "a" / "to-dir").symlink_to(outside)
    (top / "to-file").symlink_to(outside / "keep")
    (top / "dangling").symlink_to(tmp_path / "nowhere")
    remove_tree(top)
    assert not top.exists()
    assert (outside / "keep").read_text() == "precious"


def test_a_symlink_as_the_top_is_removed_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "f").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    remove_tree(link)
    assert not link.is_symlink()
    assert (target / "f").exists()


def _as_nobody(action: Callable[[], None], *owned: Path) -> None:
    """Run ``action`` in a child process as an ordinary user (root ignores modes),
    the owner of ``owned``; re-raises what it raised."""
    if os.geteuid() != 0:
        action()
        return
    for path in owned:
        os.chown(path, NOBODY, NOBODY)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            action()
        except BaseException as exc:
            os.write(write, f"{type(exc).__name__}: {exc}".encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        error = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, error


def test_unwritable_and_unreadable_directories_are_opened_up() -> None:
    base = Path(tempfile.mkdtemp(prefix="banger-rmtree-"))
    try:
        base.chmod(0o755)
        top = base / "rootfs"
        made = [top, top / "proc", top / "usr", top / "usr" / "lib", top / "locked"]
        for d in made:
            d.mkdir()
        (top / "usr" / "lib" / "f").write_text("x")
        (top / "locked" / "g").write_text("y")
        files = [top / "usr" / "lib" / "f", top / "locked" / "g"]
        for path in [*made, *files]:
            if os.geteuid() == 0:
                os.chown(path, NOBODY, NOBODY)
        (top / "usr" / "lib").chmod(0o555)
        (top / "locked").chmod(0)
        (top / "proc").chmod(0o555)
        _as_nobody(lambda: remove_tree(top), base)
        assert not top.exists()
    finally:
        shutil.rmtree(base)


def test_missing_is_fine_and_a_plain_file_goes(tmp_path: Path) -> None:
    remove_tree(tmp_path / "absent")
    f = tmp_path / "file"
    f.write_text("x")
    remove_tree(f)
    assert not f.exists()


def test_a_failure_names_the_entry_and_the_reason() -> None:
    # procfs refuses every unlink: removal fails with one line naming the entry.
    with pytest.raises(TreeRemovalError) as info:
        remove_tree(Path("/proc/self/fdinfo"))
    message = str(info.value)
    assert message.startswith("cannot remove /proc/self/fdinfo/")
    assert message.endswith(("Permission denied", "Operation not permitted"))


def test_discard_tree_reports_instead_of_raising(tmp_path: Path) -> None:
    assert discard_tree(tmp_path / "absent") is None
    message = discard_tree(Path("/proc/self/fdinfo"))
    assert message is not None and message.startswith("cannot remove /proc/self/fdinfo")
