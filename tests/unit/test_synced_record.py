"""The work disk's record of what banger synced (the guest can write it: nothing escapes)."""

from __future__ import annotations

from banger.disk.synced import SyncedRecord


def test_round_trip() -> None:
    record = SyncedRecord(files=("/.netrc", "/.config/gh/hosts.yml"), git_identity="/.gitconfig")
    assert SyncedRecord.from_bytes(record.to_bytes()) == record
    assert record.written == ("/.netrc", "/.config/gh/hosts.yml", "/.gitconfig")


def test_a_tampered_record_never_names_banger_s_own_files_or_leaves_the_disk() -> None:
    raw = (
        b'{"files": ["/.ssh/authorized_keys", "/.banger/ssh_host_ed25519_key", "/", '
        b'"/../etc/passwd", "relative", 7, "/.hushlogin", "/ok", "/ok"], '
        b'"git_identity": "/.banger/x"}'
    )
    assert SyncedRecord.from_bytes(raw) == SyncedRecord(files=("/ok",), git_identity=None)


def test_garbage_is_an_empty_record() -> None:
    for raw in (b"", b"not json", b"[1, 2]", b'{"files": "x"}'):
        assert SyncedRecord.from_bytes(raw) == SyncedRecord()
