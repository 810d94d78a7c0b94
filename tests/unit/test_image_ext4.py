from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger.errors import InvalidArgument
from banger.images.ext4build import (
    MiB,
    TreeUsage,
    filesystem_size,
    inode_count,
    make_ext4_from_tree,
    mkfs_ext4_argv,
    tree_usage,
)
from banger.images.workseed import make_work_seed


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_mkfs_argv() -> None:
    argv = mkfs_ext4_argv(Path("/b/tree"), Path("/b/out.ext4"), label="banger-root")
    assert argv == [
        "mkfs.ext4", "-q", "-F", "-T", "default", "-b", "4096", "-I", "256", "-m", "0",
        "-L", "banger-root", "-d", "/b/tree", "/b/out.ext4",
    ]  # fmt: skip
    grown = mkfs_ext4_argv(Path("/t"), Path("/o"), label="w", inodes=5000, max_grow_bytes=1 << 40)
    assert grown[-6:] == ["-N", "5000", "-E", "resize=268435456", "-d", "/t", "/o"][-6:]
    assert "-N" in grown and "resize=268435456" in grown
    with pytest.raises(InvalidArgument, match="label"):
        mkfs_ext4_argv(Path("/t"), Path("/o"), label="a label that is far too long")


def test_sizes() -> None:
    usage = TreeUsage(allocated=300 * MiB, inodes=15000)
    assert filesystem_size(2048 * MiB, usage) == 2048 * MiB
    grown = filesystem_size(100 * MiB, usage)
    assert grown == 454 * MiB  # ceil(300 * 1.3 + 64) MiB
    assert inode_count(grown, usage) is None  # 454 MiB / 16 KiB = 29056 inodes suffice
    many = TreeUsage(allocated=10 * MiB, inodes=100_000)
    assert inode_count(filesystem_size(0, many), many) == 131_024


def test_tree_usage_counts_hard_links_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/f").write_bytes(b"x" * 10000)
    os.link(tmp_path / "d/f", tmp_path / "g")
    (tmp_path / "l").symlink_to("d/f")
    usage = tree_usage(tmp_path)
    assert usage.inodes == 4  # ., d, f (twice linked), l
    assert usage.allocated >= 12288


@pytest.mark.root
def test_mkfs_keeps_owners_modes_and_xattrs(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    tree.chmod(0o755)
    suid = tree / "passwd"
    suid.write_text("x")
    suid.chmod(0o4755)
    shadow = tree / "shadow"
    shadow.write_text("x")
    os.chown(shadow, 0, 42)
    shadow.chmod(0o640)
    ping = tree / "ping"
    ping.write_text("x")
    os.setxattr(ping, "user.banger", b"kept")
    out = tmp_path / "out.ext4"
    size = make_ext4_from_tree(tree, out, 32 * MiB, "t")
    assert size == out.stat().st_size == 65 * MiB  # raised to tree + margin
    assert out.stat().st_blocks * 512 < size / 2  # sparse
    assert "Mode:  04755" in debugfs(out, "stat /passwd")
    st = debugfs(out, "stat /shadow")
    assert "Mode:  0640" in st and "Group:    42" in st
    assert "user.banger" in debugfs(out, "ea_list /ping")
    assert (
        "Filesystem volume name:   t"
        in subprocess.run(
            ["dumpe2fs", "-h", str(out)], capture_output=True, text=True, check=True
        ).stdout
    )
    with pytest.raises(InvalidArgument, match="exists already"):
        make_ext4_from_tree(tree, out, 32 * MiB, "t")


@pytest.mark.root
def test_failed_mkfs_leaves_no_file(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big").write_bytes(b"y" * 4096)
    out = tmp_path / "out.ext4"
    with pytest.raises(InvalidArgument):
        make_ext4_from_tree(tree, out, 0, "bad label!")
    assert not out.exists()


@pytest.mark.root
def test_work_seed_image(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / ".bashrc").write_text("# rc\n")
    (home / ".ssh").mkdir()
    (home / ".ssh/authorized_keys").write_text("image key\n")
    out = tmp_path / "seed.ext4"
    make_work_seed(home, out)
    root = debugfs(out, "stat /")
    assert "Mode:  0755" in root and "User:     0" in root
    listing = debugfs(out, "ls -l /")
    assert ".hushlogin" in listing and ".bashrc" in listing
    assert "Mode:  0700" in debugfs(out, "stat /.ssh")
    assert "Mode:  0700" in debugfs(out, "stat /.banger")
    assert "authorized_keys" not in debugfs(out, "ls /.ssh")
    # banger.disk grows the seed per VM: it must grow far without trouble.
    grown = tmp_path / "work.ext4"
    subprocess.run(["cp", "--sparse=always", str(out), str(grown)], check=True)
    os.truncate(grown, 64 * 1024 * MiB)
    subprocess.run(["resize2fs", str(grown)], check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fn", str(grown)], check=True, capture_output=True)
