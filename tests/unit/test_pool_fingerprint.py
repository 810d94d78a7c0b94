"""The digest that lets a take skip its SFTP session: equal only when a sync would write
exactly what the template's guest already holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from banger.config.file_sync import FileSync
from banger.daemon.pools.fingerprint import sync_fingerprint


def git_config(home: Path, key: str, value: str) -> None:
    subprocess.run(
        ["git", "config", "--global", key, value],
        env={"HOME": str(home), "PATH": os.environ["PATH"]},
        check=True,
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "dots").mkdir()
    (tmp_path / "dots" / "a.conf").write_text("a\n")
    (tmp_path / "token").write_text("v1\n")
    git_config(tmp_path, "user.name", "Ada")
    git_config(tmp_path, "user.email", "ada@example.test")
    return tmp_path


def entry(home: Path, host: str, guest: str) -> FileSync:
    return FileSync.model_validate({"host": host, "guest": guest}, context={"home": home})


def entries(home: Path) -> list[FileSync]:
    return [entry(home, "~/token", "~/.token"), entry(home, "~/dots", "~/.dots")]


def test_the_same_host_gives_the_same_digest(home: Path) -> None:
    first = sync_fingerprint(entries(home), home=home)
    assert first is not None and first == sync_fingerprint(entries(home), home=home)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: (h / "token").write_text("v2\n"),  # same size, other bytes
        lambda h: (h / "dots" / "a.conf").chmod(0o640),
        lambda h: (h / "dots" / "b.conf").write_text("new\n"),
        lambda h: git_config(h, "user.email", "ada@new.example.test"),
        lambda h: git_config(h, "user.name", "Ada L"),
    ],
    ids=["content", "mode", "new-file", "email", "name"],
)
def test_any_change_a_sync_would_write_changes_the_digest(home: Path, change: object) -> None:
    before = sync_fingerprint(entries(home), home=home)
    change(home)  # type: ignore[operator]
    after = sync_fingerprint(entries(home), home=home)
    assert after is not None and after != before


def test_other_entries_give_another_digest(home: Path) -> None:
    assert sync_fingerprint(entries(home), home=home) != sync_fingerprint(
        entries(home)[:1], home=home
    )
    moved = [entry(home, "~/token", "~/.other"), entries(home)[1]]
    assert sync_fingerprint(entries(home), home=home) != sync_fingerprint(moved, home=home)


def test_an_unreadable_host_file_gives_no_digest(home: Path) -> None:
    (home / "token").unlink()
    (home / "token").symlink_to(home / "token")  # a loop: reading it fails
    assert sync_fingerprint(entries(home), home=home) is None
