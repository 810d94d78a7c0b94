"""A file_sync plan written onto a real ext4 work disk and read back with debugfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger.config.file_sync import FileSync
from banger.disk import ext4
from banger.disk.debugfs_script import Ext4Edit
from banger.disk.gitidentity import stage_git_identity
from banger.disk.sync_plan import plan_file_sync
from banger.disk.workdisk import (
    AUTHORIZED_KEYS_PATH,
    FileSyncItem,
    HostKey,
    Provisioning,
    provision_work_disk,
)
from banger.guest.sshkeys import generate_host_key

MIB = 1024 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "work.ext4"
    with open(path, "wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "work", str(path)], check=True)
    return path


@pytest.fixture
def host_key(tmp_path: Path) -> HostKey:
    keys = tmp_path / "keys"
    keys.mkdir()
    pair = generate_host_key(keys, "test-vm")
    return HostKey(pair.private, pair.public)


def entry(home: Path, host: str, guest: str, mode: str | None = None) -> FileSync:
    raw = {"host": host, "guest": guest} | ({"mode": mode} if mode else {})
    return FileSync.model_validate(raw, context={"home": home})


def test_plan_applied_to_a_real_work_disk(disk: Path, host_key: HostKey, tmp_path: Path) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("never in the guest")
    (home / ".config/gh").mkdir(parents=True)
    (home / ".config/gh/hosts.yml").write_text("oauth_token: abc\n")
    (home / "bin").mkdir()
    (home / "bin/tool").write_text("#!/bin/sh\necho hi\n")
    tree = home / "dots"
    (tree / "sub").mkdir(parents=True)
    tree.chmod(0o750)
    (tree / "sub").chmod(0o711)
    (tree / "a.txt").write_text("alpha")
    (tree / "a.txt").chmod(0o640)
    (tree / "sub/run.sh").write_text("#!/bin/sh\n")
    (tree / "sub/run.sh").chmod(0o755)
    (tree / "file-link").symlink_to(outside / "secret")
    (tree / "sub/dir-link").symlink_to(outside)

    plan = plan_file_sync(
        [
            entry(home, "~/.config/gh/hosts.yml", "~/.config/gh/hosts.yml"),
            entry(home, "~/bin/tool", "~/bin/tool", "0755"),
            entry(home, "~/dots", "~/.dots"),
            entry(home, "~/not-there", "~/nt"),
        ],
        home=home,
    )
    assert len(plan.warnings) == 3

    # an existing guest file is overwritten
    provision_work_disk(
        disk, Provisioning("ssh-ed25519 AAAA banger", host_key, files=plan.files[:1])
    )
    (home / ".config/gh/hosts.yml").write_text("oauth_token: rotated\n")
    provision_work_disk(
        disk,
        Provisioning("ssh-ed25519 AAAA banger", host_key, dirs=plan.dirs, files=plan.files),
    )

    expected_files = {
        "/.config/gh/hosts.yml": (0o600, b"oauth_token: rotated\n"),
        "/bin/tool": (0o755, b"#!/bin/sh\necho hi\n"),
        "/.dots/a.txt": (0o640, b"alpha"),
        "/.dots/sub/run.sh": (0o755, b"#!/bin/sh\n"),
    }
    for path, (mode, content) in expected_files.items():
        got = ext4.stat(disk, path)
        assert (got.kind, got.mode, got.uid, got.gid) == ("file", mode, 0, 0), path
        assert ext4.read_file(disk, path) == content
    for path, mode in {"/.dots": 0o750, "/.dots/sub": 0o711}.items():
        got = ext4.stat(disk, path)
        assert (got.kind, got.mode, got.uid, got.gid) == ("dir", mode, 0, 0), path
    assert ext4.listdir(disk, "/.dots") == ["a.txt", "sub"]
    assert ext4.listdir(disk, "/.dots/sub") == ["run.sh"]
    assert not ext4.exists(disk, "/nt")
    assert ext4.read_file(disk, AUTHORIZED_KEYS_PATH) == b"ssh-ed25519 AAAA banger\n"
    fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def test_git_identity_merged_into_the_disk_gitconfig(
    disk: Path, host_key: HostKey, tmp_path: Path
) -> None:
    seed_config = tmp_path / "seed-gitconfig"
    seed_config.write_text("[alias]\n\tst = status\n[core]\n\tpager = less\n")
    provision_work_disk(
        disk,
        Provisioning(
            "ssh-ed25519 AAAA k", host_key, files=(FileSyncItem(".gitconfig", seed_config),)
        ),
    )
    home = tmp_path / "owner"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Owner Name\n\temail = owner@example.org\n")
    stage = tmp_path / "stage"
    stage.mkdir()
    plan = plan_file_sync([], home=home)
    staged = stage_git_identity(
        disk, home=home, stage_dir=stage, synced=plan.file_for(".gitconfig")
    )
    assert staged.item is not None
    plan = plan.with_file(staged.item)
    provision_work_disk(disk, Provisioning("ssh-ed25519 AAAA k", host_key, files=plan.files))
    got = ext4.stat(disk, "/.gitconfig")
    assert (got.mode, got.uid, got.gid) == (0o644, 0, 0)
    merged = tmp_path / "merged"
    merged.write_bytes(ext4.read_file(disk, "/.gitconfig"))
    for key, value in {
        "user.name": "Owner Name",
        "user.email": "owner@example.org",
        "alias.st": "status",
        "core.pager": "less",
    }.items():
        out = subprocess.run(
            ["git", "config", "--file", str(merged), "--get", key], capture_output=True, text=True
        )
        assert out.stdout.strip() == value, key


def test_a_removed_entry_s_files_leave_the_disk_and_the_guest_s_stay(
    disk: Path, host_key: HostKey, tmp_path: Path
) -> None:
    """Issue #21 item 1: what banger synced and no entry writes any more is deleted."""
    from banger.daemon.vms.work_sync import stage_work_sync
    from banger.disk.synced import SYNCED_RECORD_PATH, read_synced_record
    from banger.disk.workdisk import synced_record

    home = tmp_path / "home"
    (home / "dots/sub").mkdir(parents=True)
    (home / ".netrc").write_text("machine x\n")
    (home / "dots/a.conf").write_text("a\n")
    (home / "dots/sub/b.conf").write_text("b\n")
    (home / ".gitconfig").write_text("[user]\n\tname = Ada\n")
    netrc = entry(home, "~/.netrc", "~/.netrc")
    dots = entry(home, "~/dots", "~/.dots")

    def provision(*entries: FileSync) -> None:
        stage = tmp_path / f"stage-{len(entries)}"
        stage.mkdir(exist_ok=True)
        sync = stage_work_sync(entries, disk, home=home, stage_dir=stage)
        prov = Provisioning(
            "ssh-ed25519 AAAA k",
            host_key,
            dirs=sync.dirs,
            files=sync.files,
            synced=sync.synced,
            git_identity=sync.git_identity,
        )
        provision_work_disk(disk, prov)
        assert read_synced_record(disk) == synced_record(prov)

    provision(netrc, dots)
    record = read_synced_record(disk)
    assert record.files == ("/.netrc", "/.dots/a.conf", "/.dots/sub/b.conf")
    assert record.git_identity == "/.gitconfig"
    assert ext4.stat(disk, SYNCED_RECORD_PATH).mode == 0o600
    # the guest writes its own file into the synced directory
    own = tmp_path / "own"
    own.write_text("mine\n")
    ext4.apply(disk, Ext4Edit().write_file("/.dots/mine.txt", own, 0o644))

    provision(netrc)  # the [[file_sync]] entry for ~/dots was removed

    assert not ext4.exists(disk, "/.dots/a.conf")
    assert not ext4.exists(disk, "/.dots/sub/b.conf")
    assert ext4.read_file(disk, "/.dots/mine.txt") == b"mine\n"  # not banger's: kept
    assert ext4.listdir(disk, "/.dots") == ["mine.txt", "sub"]  # directories stay
    assert ext4.read_file(disk, "/.netrc") == b"machine x\n"
    assert ext4.exists(disk, "/.gitconfig")  # the identity is still written
    assert read_synced_record(disk).files == ("/.netrc",)

    provision()  # every entry gone, and no identity on the host any more
    (home / ".gitconfig").unlink()
    provision()
    assert not ext4.exists(disk, "/.netrc")
    assert ext4.exists(disk, "/.gitconfig")  # merged into the guest's own: never deleted
    fsck = subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def test_promote_leaves_out_what_banger_synced_unless_asked(
    disk: Path, host_key: HostKey, tmp_path: Path
) -> None:
    """Issue #21 item 2: a promoted work seed carries no synced credentials by default."""
    from banger.daemon.vms.work_sync import stage_work_sync
    from banger.disk.synced import SYNCED_RECORD_PATH
    from banger.images.promote import leave_out_synced, work_seed_from_disk

    home = tmp_path / "home"
    (home / "dots").mkdir(parents=True)
    (home / ".netrc").write_text("machine x password y\n")
    (home / "dots/token").write_text("t\n")
    (home / ".gitconfig").write_text("[user]\n\temail = ada@example.test\n")
    stage = tmp_path / "stage"
    stage.mkdir()
    entries = [entry(home, "~/.netrc", "~/.netrc"), entry(home, "~/dots", "~/.dots")]
    sync = stage_work_sync(entries, disk, home=home, stage_dir=stage)
    provision_work_disk(
        disk,
        Provisioning(
            "ssh-ed25519 AAAA k",
            host_key,
            dirs=sync.dirs,
            files=sync.files,
            synced=sync.synced,
            git_identity=sync.git_identity,
        ),
    )
    work = tmp_path / "work-own.txt"
    work.write_text("the guest's work\n")
    ext4.apply(disk, Ext4Edit().write_file("/notes.txt", work, 0o644))

    seed = tmp_path / "seed.ext4"
    work_seed_from_disk(disk, seed)
    assert leave_out_synced(seed) == ["/.netrc", "/.dots/token", "/.gitconfig"]
    for gone in ("/.netrc", "/.dots/token", "/.gitconfig", SYNCED_RECORD_PATH):
        assert not ext4.exists(seed, gone), gone
    assert ext4.read_file(seed, "/notes.txt") == b"the guest's work\n"

    kept = tmp_path / "kept.ext4"
    work_seed_from_disk(disk, kept)
    assert leave_out_synced(kept, include_synced=True) == []
    assert ext4.read_file(kept, "/.netrc") == b"machine x password y\n"
    assert not ext4.exists(kept, SYNCED_RECORD_PATH)  # the record never goes into an image
