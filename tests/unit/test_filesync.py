"""file_sync planning on real temp trees (no disk image: see the integration test)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from banger.config.file_sync import FileSync
from banger.disk.sync_plan import SyncPlan, plan_file_sync
from banger.disk.workdisk import DirItem, FileSyncItem
from banger.errors import BangerError, InvalidArgument


def entry(home: Path, host: str, guest: str, mode: str | None = None) -> FileSync:
    raw: dict[str, str] = {"host": host, "guest": guest}
    if mode is not None:
        raw["mode"] = mode
    return FileSync.model_validate(raw, context={"home": home})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def write(path: Path, text: str = "x", mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_file_entries_default_and_explicit_mode(home: Path) -> None:
    token = write(home / ".config/gh/hosts.yml", "token", 0o644)
    script = write(home / "bin/tool", "#!/bin/sh\n", 0o700)
    plan = plan_file_sync(
        [
            entry(home, "~/.config/gh/hosts.yml", "~/.config/gh/hosts.yml"),
            entry(home, "~/bin/tool", "/root/bin/tool", "0755"),
        ],
        home=home,
    )
    assert plan == SyncPlan(
        dirs=(),
        files=(
            FileSyncItem(".config/gh/hosts.yml", token, 0o600),
            FileSyncItem("bin/tool", script, 0o755),
        ),
        warnings=(),
    )


def test_directory_tree_keeps_modes_and_skips_nested_symlinks(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "secret", "do not copy")
    tree = home / "dots"
    tree.mkdir()
    tree.chmod(0o750)
    a = write(tree / "a.txt", "a", 0o640)
    run = write(tree / "sub/run.sh", "#!/bin/sh", 0o755)
    (tree / "sub").chmod(0o711)
    (tree / "empty").mkdir(mode=0o700)
    (tree / "empty").chmod(0o700)
    (tree / "file-link").symlink_to(outside / "secret")
    (tree / "sub/dir-link").symlink_to(outside)
    (tree / "inner-link").symlink_to("a.txt")  # even a link inside the tree: skipped
    plan = plan_file_sync([entry(home, "~/dots", "~/.dots", "0755")], home=home)
    assert plan.dirs == (
        DirItem(".dots", 0o750),
        DirItem(".dots/empty", 0o700),
        DirItem(".dots/sub", 0o711),
    )
    assert plan.files == (
        FileSyncItem(".dots/a.txt", a, 0o640),
        FileSyncItem(".dots/sub/run.sh", run, 0o755),
    )
    # Each says its real reason (issue #21 item 10): none is followed either way.
    assert sorted(plan.warnings) == [
        "file_sync: skipped symlink ~/dots/file-link: it points outside the synced tree"
        " (nested symlinks are never followed)",
        "file_sync: skipped symlink ~/dots/inner-link: nested symlinks are never synced"
        " (this one stays inside the tree: sync its target)",
        "file_sync: skipped symlink ~/dots/sub/dir-link: it points outside the synced tree"
        " (nested symlinks are never followed)",
    ]


def test_missing_and_dangling_paths_are_warnings(home: Path) -> None:
    (home / "dangling").symlink_to(home / "nowhere")
    write(home / "plain", "p")
    plan = plan_file_sync(
        [
            entry(home, "~/missing.txt", "~/m"),
            entry(home, "~/dangling", "~/d"),
            entry(home, "~/plain/below", "~/p"),
        ],
        home=home,
    )
    assert plan.files == () and plan.dirs == ()
    assert plan.warnings == (
        "file_sync: skipped ~/missing.txt: not found",
        "file_sync: skipped ~/dangling: not found (a dangling symlink)",
        "file_sync: skipped ~/plain/below: not found (a parent is not a directory)",
    )


def test_top_level_symlinks_are_followed_inside_the_home(home: Path) -> None:
    real_dir = home / "dotfiles" / "elsewhere"
    inner = write(real_dir / "conf", "c", 0o600)
    real_file = write(home / "dotfiles" / "token", "t")
    (home / "linked-dir").symlink_to(real_dir)
    (home / "linked-file").symlink_to(real_file)
    plan = plan_file_sync(
        [entry(home, "~/linked-dir", "~/d"), entry(home, "~/linked-file", "~/f")], home=home
    )
    assert plan.dirs == (DirItem("d", real_dir.stat().st_mode & 0o777),)
    assert plan.files == (
        FileSyncItem("d/conf", home / "linked-dir/conf", 0o600),
        FileSyncItem("f", home / "linked-file", 0o600),
    )
    assert inner.read_text() == "c"
    assert plan.warnings == ()


@pytest.mark.parametrize("target", ["file", "dir", "parent"])
def test_a_top_level_symlink_out_of_the_home_is_refused(
    home: Path, tmp_path: Path, target: str
) -> None:
    """README: file_sync never reads outside the home on your behalf (issue #21 item 6)."""
    outside = write(tmp_path / "etc" / "hostname", "secret")
    if target == "file":
        (home / "link").symlink_to(outside)
        name = "~/link"
    elif target == "dir":
        (home / "link").symlink_to(outside.parent)
        name = "~/link"
    else:  # a directory on the way is the link
        (home / "cfg").symlink_to(outside.parent)
        name = "~/cfg/hostname"
    with pytest.raises(InvalidArgument) as refused:
        plan_file_sync([entry(home, "~/ok-missing", "~/a"), entry(home, name, "~/b")], home=home)
    assert refused.value.message.startswith(f"file_sync[1].host: {name} resolves to ")
    assert "outside your home" in refused.value.message and "\n" not in refused.value.message


def test_special_files_are_skipped(home: Path, short_tmp: Path) -> None:
    # a short home so the socket path fits in sun_path
    h = short_tmp / "h"
    (h / "d").mkdir(parents=True)
    os.mkfifo(h / "d/fifo")
    os.mkfifo(h / "top-fifo")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(h / "d/sock"))
        plan = plan_file_sync([entry(h, "~/d", "~/d"), entry(h, "~/top-fifo", "~/f")], home=h)
    finally:
        sock.close()
    assert plan.files == ()
    assert plan.dirs == (DirItem("d", (h / "d").stat().st_mode & 0o777),)
    assert sorted(plan.warnings) == [
        "file_sync: skipped ~/d/fifo: not a regular file or directory",
        "file_sync: skipped ~/d/sock: not a regular file or directory",
        "file_sync: skipped ~/top-fifo: not a regular file or directory",
    ]


@pytest.mark.parametrize(
    "guest", ["~/.banger", "~/.banger/ssh_host_ed25519_key", "~/.ssh/authorized_keys"]
)
def test_banger_files_are_refused(home: Path, guest: str) -> None:
    """Refused when the entry is read, so `config validate` and `vm start` agree (#21)."""
    write(home / "x")
    with pytest.raises(ValidationError, match=r"managed by banger and cannot be synced"):
        entry(home, "~/x", guest)


def test_nested_files_on_banger_paths_are_skipped(home: Path) -> None:
    keys = write(home / "ssh/config", "Host *")
    write(home / "ssh/authorized_keys", "ssh-ed25519 AAAA other")
    (home / "ssh").chmod(0o775)
    plan = plan_file_sync([entry(home, "~/ssh", "~/.ssh")], home=home)
    # ~/.ssh stays 0700 whatever the host's mode, or sshd's StrictModes locks us out
    assert plan.dirs == (DirItem(".ssh", 0o700),)
    assert plan.files == (FileSyncItem(".ssh/config", keys, 0o644),)
    assert plan.warnings == (
        "file_sync: skipped ~/ssh/authorized_keys: ~/.ssh/authorized_keys is managed by banger",
    )


def test_other_errors_name_the_path(home: Path) -> None:
    (home / "loop").symlink_to(home / "loop")
    with pytest.raises(BangerError, match=r"cannot read ~/loop: Too many levels of symbolic"):
        plan_file_sync([entry(home, "~/loop", "~/l")], home=home)


def test_entries_outside_home_are_refused(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "f")
    foreign = entry(other, "~/f", "~/f")  # validated against another home
    with pytest.raises(InvalidArgument, match="not inside the owner's home"):
        plan_file_sync([foreign], home=home)


def test_names_debugfs_cannot_write_go_over_ssh_later(home: Path) -> None:
    """Issue #21 item 5: never a silent drop; the guest connection carries them."""
    write(home / "d/ok")
    write(home / 'd/quo"te')
    write(home / "d/new\nline")
    write(home / "d/tab\tdir/inside")
    plan = plan_file_sync([entry(home, "~/d", "~/d")], home=home)
    assert [f.guest_rel_path for f in plan.files] == ["d/ok"]
    assert [f.guest_rel_path for f in plan.late_files] == [
        "d/new\nline",
        'd/quo"te',
        "d/tab\tdir/inside",  # below a late directory, late too
    ]
    assert [d.guest_rel_path for d in plan.late_dirs] == ["d/tab\tdir"]
    assert plan.warnings == ()
    assert len(plan.notices) == 3
    assert all("copied over SSH once the guest is up" in n for n in plan.notices)


def test_with_file_replaces_same_target(home: Path) -> None:
    a, b = write(home / "a"), write(home / "b")
    plan = SyncPlan(files=(FileSyncItem(".gitconfig", a), FileSyncItem("x", a)))
    replaced = plan.with_file(FileSyncItem(".gitconfig", b, 0o644))
    assert replaced.files == (FileSyncItem("x", a), FileSyncItem(".gitconfig", b, 0o644))
    assert replaced.file_for(".gitconfig") == FileSyncItem(".gitconfig", b, 0o644)
    assert plan.file_for("nope") is None
