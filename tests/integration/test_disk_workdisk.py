"""Work disks: created from a seed, grown, provisioned, read back (real e2fsprogs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit
from banger.disk.workdisk import (
    AUTHORIZED_KEYS_PATH,
    HOST_KEY_PATH,
    DirItem,
    FileSyncItem,
    HostKey,
    Provisioning,
    create_work_disk,
    disk_path,
    grow_work_disk,
    merged_authorized_keys,
    provision_work_disk,
)
from banger.errors import Conflict, InvalidArgument, NotFound
from banger.guest.sshkeys import generate_host_key

MIB = 1024 * 1024


def fsck_clean(image: Path) -> None:
    result = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def fs_bytes(image: Path) -> int:
    """Filesystem size from the superblock (C locale, stable field names)."""
    out = subprocess.run(
        ["dumpe2fs", "-h", str(image)],
        capture_output=True,
        text=True,
        check=True,
        env={"LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    ).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    path = tmp_path / "work-seed.ext4"
    with open(path, "wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "work", str(path)], check=True)
    return path


def test_create_is_sparse_and_grown(seed: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="directory for the work disk"):
        create_work_disk(seed, tmp_path / "vm" / "work.ext4", 2048 * MIB)
    (tmp_path / "vm").mkdir()
    disk = create_work_disk(seed, tmp_path / "vm" / "work.ext4", 2048 * MIB)
    assert disk.stat().st_size == 2048 * MIB
    assert fs_bytes(disk) == 2048 * MIB
    # allocated blocks ≪ size: the copy and the growth kept the holes
    assert disk.stat().st_blocks * 512 < 100 * MIB
    assert not list(disk.parent.glob(".work.ext4.tmp-*"))
    fsck_clean(disk)
    with pytest.raises(Conflict):
        create_work_disk(seed, disk, 2048 * MIB)


def test_grow_and_refuse_to_shrink(seed: Path, tmp_path: Path) -> None:
    disk = create_work_disk(seed, tmp_path / "work.ext4", 64 * MIB)
    assert grow_work_disk(disk, 64 * MIB) is False
    assert grow_work_disk(disk, 128 * MIB) is True
    assert fs_bytes(disk) == 128 * MIB
    with pytest.raises(InvalidArgument, match="shrinking"):
        grow_work_disk(disk, 64 * MIB)
    with pytest.raises(InvalidArgument, match="smaller than the image's work seed"):
        create_work_disk(seed, tmp_path / "small.ext4", 16 * MIB)
    with pytest.raises(InvalidArgument, match="whole number of MiB"):
        create_work_disk(seed, tmp_path / "odd.ext4", 64 * MIB + 1)
    with pytest.raises(NotFound):
        create_work_disk(tmp_path / "no-seed", tmp_path / "x.ext4", 64 * MIB)
    fsck_clean(disk)


def test_provision_writes_everything_in_one_batch(seed: Path, tmp_path: Path) -> None:
    disk = create_work_disk(seed, tmp_path / "work.ext4", 64 * MIB)
    key = generate_host_key(tmp_path / "vm", "vm1")
    gitconfig = tmp_path / "home" / ".gitconfig"
    gitconfig.parent.mkdir()
    gitconfig.write_text("[user]\n\tname = Dev\n")
    hosts = tmp_path / "home" / "gh hosts.yml"
    hosts.write_text("github.com:\n  oauth_token: x\n")
    prov = Provisioning(
        authorized_keys="ssh-ed25519 AAAAC3Nza banger",
        host_key=HostKey(key.private, key.public),
        dirs=(DirItem("projects", 0o755),),
        files=(
            FileSyncItem(".gitconfig", gitconfig, 0o644),
            FileSyncItem(".config/gh/gh hosts.yml", hosts),
        ),
    )
    provision_work_disk(disk, prov)

    def check(path: str, kind: str, mode: int) -> None:
        st = ext4.stat(disk, path)
        assert (st.kind, st.mode, st.uid, st.gid) == (kind, mode, 0, 0), path

    check("/", "dir", 0o755)
    check("/.ssh", "dir", 0o700)
    check(AUTHORIZED_KEYS_PATH, "file", 0o600)
    check("/.banger", "dir", 0o700)
    check(HOST_KEY_PATH, "file", 0o600)
    check(HOST_KEY_PATH + ".pub", "file", 0o644)
    check("/.hushlogin", "file", 0o644)
    check("/projects", "dir", 0o755)
    check("/.gitconfig", "file", 0o644)
    check("/.config/gh/gh hosts.yml", "file", 0o600)
    assert ext4.read_file(disk, AUTHORIZED_KEYS_PATH) == b"ssh-ed25519 AAAAC3Nza banger\n"
    assert ext4.read_file(disk, HOST_KEY_PATH) == key.private.read_bytes()
    assert ext4.read_file(disk, "/.config/gh/gh hosts.yml") == hosts.read_bytes()
    assert ext4.read_file(disk, "/.hushlogin") == b""
    fsck_clean(disk)

    # provisioning again (every start) replaces the host key, ensures banger's
    # key in authorized_keys and keeps every other line there (issue #21 item 3)
    key2 = generate_host_key(tmp_path / "vm", "vm1")
    provision_work_disk(
        disk, Provisioning("ssh-ed25519 BBBB banger\n", HostKey(key2.private, key2.public))
    )
    assert ext4.read_file(disk, HOST_KEY_PATH) == key2.private.read_bytes()
    assert ext4.read_file(disk, AUTHORIZED_KEYS_PATH) == (
        b"ssh-ed25519 AAAAC3Nza banger\nssh-ed25519 BBBB banger\n"
    )
    assert ext4.exists(disk, "/.gitconfig")  # earlier files stay
    fsck_clean(disk)


def test_keys_added_in_the_guest_survive_provisioning(seed: Path, tmp_path: Path) -> None:
    disk = create_work_disk(seed, tmp_path / "work.ext4", 64 * MIB)
    key = generate_host_key(tmp_path / "vm", "vm1")
    prov = Provisioning("ssh-ed25519 AAAAbanger banger-owner", HostKey(key.private, key.public))
    provision_work_disk(disk, prov)
    # What the user does in the guest: another key, and banger's own with options.
    users = (
        b'# mine\nssh-rsa AAAAuser me@laptop\nfrom="10.0.0.0/8" ssh-ed25519 AAAAbanger renamed\n'
    )
    edit = Ext4Edit()
    edit.write_bytes(AUTHORIZED_KEYS_PATH, users, 0o600, stage_dir=tmp_path)
    ext4.apply(disk, edit, stage_dir=tmp_path)
    for _ in range(2):  # every start: nothing lost, banger's key not added twice
        provision_work_disk(disk, prov)
        assert ext4.read_file(disk, AUTHORIZED_KEYS_PATH) == users
    assert merged_authorized_keys(b"ssh-rsa AAAAuser me\n", "ssh-ed25519 K b") == (
        "ssh-rsa AAAAuser me\nssh-ed25519 K b\n"
    )
    assert merged_authorized_keys(b"", "ssh-ed25519 K b\n") == "ssh-ed25519 K b\n"
    fsck_clean(disk)


def test_provision_checks_inputs(seed: Path, tmp_path: Path) -> None:
    disk = create_work_disk(seed, tmp_path / "work.ext4", 64 * MIB)
    key = generate_host_key(tmp_path / "vm", "vm1")
    hk = HostKey(key.private, key.public)
    with pytest.raises(NotFound, match="file to sync not found"):
        provision_work_disk(
            disk, Provisioning("k", hk, files=(FileSyncItem("x", tmp_path / "absent"),))
        )
    for bad in ("/etc/passwd", "../escape", "a/../../b", ""):
        with pytest.raises(InvalidArgument):
            disk_path(bad)
    assert disk_path(".config/gh/") == "/.config/gh"


def test_work_disk_from_a_read_only_seed_is_writable_by_its_owner(
    seed: Path, tmp_path: Path
) -> None:
    # Published seeds are 0444; the owner (not root) must still grow and boot the copy.
    seed.chmod(0o444)
    disk = create_work_disk(seed, tmp_path / "work.ext4", 64 * MIB)
    assert disk.stat().st_mode & 0o777 == 0o600
    assert seed.stat().st_mode & 0o777 == 0o444
