"""What banger last synced onto a work disk: ``/root/.banger/synced.json``.

Every provisioning batch rewrites this record of the files ``[[file_sync]]``
wrote and the file the git identity was merged into. banger reads it back:

- at the next start, a file it lists that no entry writes any more (the entry
  was removed from config.toml, or a file left the synced directory) is
  deleted from the work disk — banger wrote it, so banger takes it away;
  directories are left, and a path that is no longer a file (the guest put a
  directory there) is left alone;
- ``image promote --with-work-disk`` leaves every listed file out of the new
  image's work seed (credentials must not travel into an image).

The record lives in banger's own directory on the disk (``.banger/``, which
``[[file_sync]]`` can never write). The guest can edit it; at worst that makes
banger delete a file of the guest's own disk at the next start, never one of
banger's own (those are refused here) and never anything on the host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from banger.disk import ext4
from banger.disk.debugfs_script import image_path
from banger.errors import BangerError, InvalidArgument, NotFound

#: Relative to the work disk root (the guest's ``/root``).
SYNCED_RECORD_PATH = "/.banger/synced.json"
#: banger's own files on the work disk: never listed, never deleted through the record.
_BANGER_OWN = ("/.banger", "/.ssh/authorized_keys", "/.hushlogin")


@dataclass(frozen=True)
class SyncedRecord:
    """Paths relative to the disk root, each ``/``-prefixed (``/.netrc``)."""

    files: tuple[str, ...] = ()
    git_identity: str | None = None

    @property
    def written(self) -> tuple[str, ...]:
        """Everything banger wrote for the owner: synced files and the git identity."""
        extra = (
            (self.git_identity,)
            if self.git_identity and self.git_identity not in self.files
            else ()
        )
        return (*self.files, *extra)

    def to_bytes(self) -> bytes:
        data = {"version": 1, "files": list(self.files), "git_identity": self.git_identity}
        return (json.dumps(data, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SyncedRecord:
        """Parse a record; anything malformed (the guest can write it) counts as empty."""
        try:
            data = json.loads(raw)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        files = data.get("files")
        identity = data.get("git_identity")
        return cls(
            files=tuple(_clean(files if isinstance(files, list) else [])),
            git_identity=next(iter(_clean([identity])), None),
        )


def _clean(paths: Iterable[object]) -> list[str]:
    out: list[str] = []
    for path in paths:
        if not isinstance(path, str):
            continue
        try:
            normal = image_path(path, "synced path")
        except InvalidArgument:
            continue
        if normal == "/" or any(
            normal == own or normal.startswith(own + "/") for own in _BANGER_OWN
        ):
            continue
        if normal not in out:
            out.append(normal)
    return out


def read_synced_record(disk: Path) -> SyncedRecord:
    """The disk's record; empty when there is none (a disk provisioned by an older banger)."""
    try:
        raw = ext4.read_file(disk, SYNCED_RECORD_PATH)
    except NotFound:
        return SyncedRecord()
    except BangerError:
        return SyncedRecord()  # a directory or unreadable entry the guest put there
    return SyncedRecord.from_bytes(raw)


def stale_files(disk: Path, old: SyncedRecord, new: SyncedRecord) -> list[str]:
    """Files ``old`` lists that ``new`` does not write and that are still files on ``disk``."""
    keep = set(new.written)
    gone = [p for p in old.files if p not in keep]
    if not gone:
        return []
    found = ext4.stat_many(disk, gone)
    return [p for p in gone if (s := found.get(p)) is not None and s.kind in ("file", "symlink")]
