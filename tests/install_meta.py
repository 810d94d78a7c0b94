"""An install metadata file (``/etc/banger/install.toml``'s format) for tests that need
banger to believe it is installed system-wide, written anywhere."""

from __future__ import annotations

from pathlib import Path

from banger.system.metadata import InstallMetadata


def write_metadata(path: Path, *, owner_uid: int, runtime_dir: str) -> Path:
    meta = InstallMetadata(
        owner="someone",
        owner_uid=owner_uid,
        owner_gid=owner_uid,
        version="1",
        installed_at="2024-01-01T00:00:00Z",
        daemon_version="1",
        helper_version="1",
        paths={"runtime_dir": runtime_dir},
    )
    path.write_text(meta.to_toml())
    return path
