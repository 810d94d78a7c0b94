"""Git identity: read from a temp home with real git, merged with git's own writer."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from banger.disk.gitidentity import (
    GitIdentity,
    merge_gitconfig,
    read_host_identity,
    stage_git_identity,
)
from banger.disk.workdisk import FileSyncItem
from banger.errors import BangerError

EXISTING = b"""# from the image's work seed
[core]
\teditor = vim
\tautocrlf = input
[alias]
\tst = status -sb
\tlg = log --oneline --graph
[user]
\tname = Image Default
\tsigningkey = ABC123
"""


def git_get(path: Path, key: str) -> str:
    return subprocess.run(
        ["git", "config", "--file", str(path), "--get", key],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_reads_identity_from_the_given_home(home: Path) -> None:
    assert read_host_identity(home) == GitIdentity(None, None)
    (home / ".gitconfig").write_text("[user]\n\tname = Ada Lovelace\n[include]\n\tpath = more\n")
    (home / "more").write_text("[user]\n\temail = ada@example.org\n")
    assert read_host_identity(home) == GitIdentity("Ada Lovelace", "ada@example.org")


def test_reads_xdg_config(home: Path) -> None:
    (home / ".config/git").mkdir(parents=True)
    (home / ".config/git/config").write_text("[user]\n\temail = xdg@example.org\n")
    assert read_host_identity(home) == GitIdentity(None, "xdg@example.org")


def test_merge_keeps_other_keys_and_sections(tmp_path: Path) -> None:
    merged = merge_gitconfig(
        EXISTING, GitIdentity("Ada Lovelace", 'ada "the first" @example.org'), workdir=tmp_path
    )
    out = tmp_path / "merged"
    out.write_bytes(merged)
    assert git_get(out, "user.name") == "Ada Lovelace"
    assert git_get(out, "user.email") == 'ada "the first" @example.org'
    assert git_get(out, "user.signingkey") == "ABC123"
    assert git_get(out, "core.editor") == "vim"
    assert git_get(out, "core.autocrlf") == "input"
    assert git_get(out, "alias.st") == "status -sb"
    assert git_get(out, "alias.lg") == "log --oneline --graph"
    assert merged.startswith(b"# from the image's work seed\n[core]")
    assert list(tmp_path.iterdir()) == [out]  # the temp copy is gone


def test_merge_into_nothing_and_name_only(tmp_path: Path) -> None:
    out = tmp_path / "merged"
    out.write_bytes(merge_gitconfig(b"", GitIdentity("Only Name", None), workdir=tmp_path))
    assert git_get(out, "user.name") == "Only Name"
    assert "email" not in out.read_text()


def test_merge_refuses_a_broken_file(tmp_path: Path) -> None:
    with pytest.raises(BangerError, match="cannot merge the git identity"):
        merge_gitconfig(b"[core\nbroken", GitIdentity("A", "a@b"), workdir=tmp_path)


def test_stage_uses_the_synced_file_as_base(home: Path, tmp_path: Path) -> None:
    (home / ".gitconfig").write_text("[user]\n\tname = Host User\n\temail = host@example.org\n")
    synced = tmp_path / "synced-gitconfig"
    synced.write_bytes(EXISTING)
    stage = tmp_path / "stage"
    stage.mkdir()
    staged = stage_git_identity(
        tmp_path / "no-disk-needed.ext4",
        home=home,
        stage_dir=stage,
        synced=FileSyncItem(".gitconfig", synced),
    )
    assert staged.notice is None and staged.item is not None
    assert (staged.item.guest_rel_path, staged.item.mode) == (".gitconfig", 0o644)
    assert staged.item.host_path.parent == stage
    assert git_get(staged.item.host_path, "user.name") == "Host User"
    assert git_get(staged.item.host_path, "alias.lg") == "log --oneline --graph"


def test_stage_without_identity_is_a_notice(home: Path, tmp_path: Path) -> None:
    staged = stage_git_identity(tmp_path / "unused.ext4", home=home, stage_dir=tmp_path)
    assert staged.item is None
    assert staged.notice is not None and "none on the host" in staged.notice
