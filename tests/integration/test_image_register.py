"""register_image end to end on a small synthetic rootfs: directory, tarball, ext4."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from banger.errors import Conflict
from banger.images.finalize import ImageNotBootable, fast_init_text
from banger.images.publish import list_images
from banger.images.register import register_image
from banger.paths import Paths

pytestmark = pytest.mark.root


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    ).stdout


def small_rootfs(path: Path) -> Path:
    for d in ("usr/bin", "usr/sbin", "etc/ssh/sshd_config.d", "root"):
        (path / d).mkdir(parents=True)
    (path / "bin").symlink_to("usr/bin")
    (path / "sbin").symlink_to("usr/sbin")
    for exe in ("usr/bin/sh", "usr/sbin/sshd", "usr/bin/tmux", "usr/bin/passwd"):
        (path / exe).write_text("#!/fake\n")
        (path / exe).chmod(0o755)
    (path / "usr/bin/passwd").chmod(0o4755)
    (path / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    (path / "etc/ssh/ssh_host_ed25519_key").write_text("shared\n")
    (path / "root/.bashrc").write_text("# small rc\n")
    return path


def check_image(rootfs: Path, seed: Path) -> None:
    assert "PasswordAuthentication no" in debugfs(
        rootfs, "cat /etc/ssh/sshd_config.d/10-banger.conf"
    )
    assert "ssh_host_" not in debugfs(rootfs, "ls /etc/ssh")
    assert debugfs(rootfs, "cat /usr/sbin/banger-fast-init") == fast_init_text()
    assert "Mode:  04755" in debugfs(rootfs, "stat /usr/bin/passwd")
    assert "Mode:  0755" in debugfs(rootfs, "stat /root")
    assert ".bashrc" in debugfs(seed, "ls /")


def test_register_dir_tar_and_ext4(banger_home: Path, tmp_path: Path) -> None:
    paths = Paths.from_env()
    source = small_rootfs(tmp_path / "src")
    from_dir = register_image(source, paths=paths, name="small-dir")
    check_image(from_dir.rootfs, from_dir.work_seed)
    assert from_dir.source == f"dir:{source}"
    assert (source / "etc/ssh/ssh_host_ed25519_key").exists()  # the original is untouched
    assert (source / "root/.bashrc").exists()

    archive = tmp_path / "small.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=".")
    from_tar = register_image(archive, paths=paths, name="small-tar")
    check_image(from_tar.rootfs, from_tar.work_seed)

    # An ext4 image file (here: the one just built) is read out with debugfs,
    # finalized again and rebuilt.
    from_ext4 = register_image(from_dir.rootfs, paths=paths, name="small-ext4")
    assert "Mode:  04755" in debugfs(from_ext4.rootfs, "stat /usr/bin/passwd")
    assert "ssh_host_" not in debugfs(from_ext4.rootfs, "ls /etc/ssh")

    assert sorted(e.name for e in list_images(paths.images_dir)) == [
        "small-dir",
        "small-ext4",
        "small-tar",
    ]
    assert list(paths.tmp_dir.iterdir()) == []
    with pytest.raises(Conflict):
        register_image(source, paths=paths, name="small-dir")
    assert list(paths.tmp_dir.iterdir()) == []


def test_register_refuses_a_tree_without_sshd(banger_home: Path, tmp_path: Path) -> None:
    paths = Paths.from_env()
    source = small_rootfs(tmp_path / "src")
    (source / "usr/sbin/sshd").unlink()
    with pytest.raises(ImageNotBootable, match="sshd"):
        register_image(source, paths=paths, name="broken")
    assert list_images(paths.images_dir) == []
    assert list(paths.tmp_dir.iterdir()) == []
