"""The real Debian image, built once (tests/image_cache.py) and inspected.

Inspection goes through debugfs (no mount) as banger itself would, plus one
loop mount of a throwaway copy to run the image's own sshd config check.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.images.finalize import FSTAB, SSHD_HARDENING, fast_init_text
from banger.images.publish import read_image
from tests.image_cache import cached_debian_image

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def image() -> Path:
    return cached_debian_image()


def debugfs(image: Path, command: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", command, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_image_json(image: Path) -> None:
    entry = read_image(image)
    assert entry.name == "debian-bookworm" and entry.source == "debian:bookworm"
    assert entry.rootfs_size == (image / "rootfs.ext4").stat().st_size
    assert entry.rootfs_allocated < entry.rootfs_size  # sparse
    subprocess.run(["e2fsck", "-fn", str(image / "rootfs.ext4")], check=True, capture_output=True)


def test_rootfs_contract_files(image: Path) -> None:
    rootfs = image / "rootfs.ext4"
    assert debugfs(rootfs, "cat /etc/ssh/sshd_config.d/10-banger.conf") == SSHD_HARDENING
    assert debugfs(rootfs, "cat /etc/ssh/sshd_config.d/20-banger-hostkey.conf") == (
        "HostKey /root/.banger/ssh_host_ed25519_key\n"
    )
    assert debugfs(rootfs, "cat /etc/fstab") == FSTAB
    assert "ssh_host_" not in debugfs(rootfs, "ls /etc/ssh")
    assert debugfs(rootfs, "cat /etc/hostname") == ""
    assert debugfs(rootfs, "cat /usr/sbin/banger-fast-init") == fast_init_text()
    assert "Mode:  0755" in debugfs(rootfs, "stat /usr/sbin/banger-fast-init")
    assert "usr/sbin" in debugfs(rootfs, "stat /sbin")  # usrmerge: /sbin -> usr/sbin
    release = json.loads(debugfs(rootfs, "cat /etc/banger-release"))
    assert release["finalize_version"] == 1


def test_rootfs_ownership_modes_and_caps(image: Path) -> None:
    rootfs = image / "rootfs.ext4"
    root = debugfs(rootfs, "stat /root")
    assert "Mode:  0755" in root and "User:     0" in root
    assert ".bashrc" not in debugfs(rootfs, "ls /root")  # moved to the work seed
    assert "Mode:  04755" in debugfs(rootfs, "stat /usr/bin/passwd")
    assert "security.capability" in debugfs(rootfs, "ea_list /usr/bin/ping")
    shadow = debugfs(rootfs, "stat /etc/shadow")
    assert "Mode:  0640" in shadow and "Group:    42" in shadow


def test_work_seed(image: Path) -> None:
    seed = image / "work-seed.ext4"
    listing = debugfs(seed, "ls /")
    for name in (".bashrc", ".profile", ".hushlogin", ".ssh", ".banger"):
        assert name in listing
    assert "Mode:  0755" in debugfs(seed, "stat /")
    assert "Mode:  0700" in debugfs(seed, "stat /.ssh")
    assert "Mode:  0700" in debugfs(seed, "stat /.banger")
    assert debugfs(seed, "ls /.ssh").split()[-1] == ".."  # empty: keys are per VM
    assert "login shells" in debugfs(seed, "cat /.profile")  # the image's own root skeleton


@pytest.fixture
def mounted_copy(image: Path, tmp_path: Path) -> Iterator[Path]:
    """A loop-mounted throwaway copy of the rootfs (the cached image stays untouched)."""
    copy = tmp_path / "root.ext4"
    subprocess.run(["cp", "--sparse=always", str(image / "rootfs.ext4"), str(copy)], check=True)
    copy.chmod(0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(copy), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_sshd_accepts_the_config_with_only_the_per_vm_host_key(mounted_copy: Path) -> None:
    tree = mounted_copy

    def sshd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["chroot", str(tree), "/usr/sbin/sshd", *args, "-f", "/etc/ssh/sshd_config"],
            capture_output=True,
            text=True,
        )

    (tree / "run/sshd").mkdir(parents=True, exist_ok=True)  # systemd's RuntimeDirectory
    without_key = sshd("-t")
    assert without_key.returncode != 0 and "no hostkeys" in without_key.stderr
    (tree / "root/.banger").mkdir(mode=0o700)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
         str(tree / "root/.banger/ssh_host_ed25519_key")],
        check=True,
    )  # fmt: skip
    assert sshd("-t").returncode == 0, sshd("-t").stderr
    effective = sshd("-T").stdout.lower().splitlines()
    for line in (
        "permitrootlogin without-password",  # sshd -T spells prohibit-password so
        "pubkeyauthentication yes",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "authorizedkeysfile /root/.ssh/authorized_keys",
        "hostkey /root/.banger/ssh_host_ed25519_key",
        "strictmodes yes",
    ):
        assert line in effective, line
    assert [x for x in effective if x.startswith("hostkey ")] == [
        "hostkey /root/.banger/ssh_host_ed25519_key"
    ]
    dropin = tree / "etc/systemd/system/ssh.service.d/10-banger.conf"
    assert "After=banger-workdisk.service" in dropin.read_text()
    assert (tree / "etc/systemd/system/apt-daily.timer").readlink() == Path("/dev/null")
