"""Bundle pieces: extent maps of real sparse files, hand-made bundles with wrong shapes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from banger.images.bundle import BundleCorrupt, Extent, data_extents, import_bundle
from banger.paths import Paths

MiB = 1024 * 1024


def test_extents_of_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(MiB)
        f.write(b"a" * 4096)
        f.seek(40 * MiB)
        f.write(b"b" * 8192)
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = data_extents(fd, 64 * MiB)
    finally:
        os.close(fd)
    assert [e.offset for e in extents] == [MiB, 40 * MiB]
    assert all(e.length >= 4096 for e in extents)
    assert data_extents(os.open(tmp_path, os.O_RDONLY), 0) == []


Members = list[tuple[str, bytes]]


def bundle_of(tmp: Path, members: Members, manifest: dict[str, object] | None) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if manifest is not None:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp / "b.bundle"
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buf.getvalue()))
    return path


def good_members() -> list[tuple[str, bytes]]:
    disk = json.dumps({"size": 8192, "extents": [[0, 4]]}).encode()
    return [
        ("image.json", json.dumps({"name": "x", "source": "s"}).encode()),
        ("rootfs.extents", disk),
        ("rootfs.data", b"root"),
        ("work-seed.extents", disk),
        ("work-seed.data", b"seed"),
    ]


def manifest_for(members: list[tuple[str, bytes]]) -> dict[str, object]:
    return {
        "format": "banger-bundle",
        "version": 1,
        "members": {n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                    for n, d in members},
    }  # fmt: skip


def test_hand_made_bundle_imports(tmp_path: Path) -> None:
    members = good_members()
    paths = Paths.from_env({"BANGER_HOME": str(tmp_path / "h")})
    entry = import_bundle(bundle_of(tmp_path, members, manifest_for(members)), paths=paths)
    assert entry.rootfs.read_bytes() == b"root" + bytes(8188)


@pytest.mark.parametrize(
    "damage",
    ["extra-member", "missing-member", "data-before-map", "overlapping-extents", "no-manifest",
     "wrong-version", "manifest-lies"],
)  # fmt: skip
def test_wrong_shapes_are_refused_and_leave_nothing(tmp_path: Path, damage: str) -> None:
    members = good_members()
    manifest: dict[str, object] | None = manifest_for(members)
    if damage == "extra-member":
        members.insert(1, ("evil.sh", b"#!/bin/sh"))
    elif damage == "missing-member":
        members = [m for m in members if m[0] != "work-seed.data"]
    elif damage == "data-before-map":
        members[1], members[2] = members[2], members[1]
    elif damage == "overlapping-extents":
        bad = json.dumps({"size": 8192, "extents": [[0, 4], [2, 4]]}).encode()
        members[1] = ("rootfs.extents", bad)
        members[2] = ("rootfs.data", b"rootro")
        manifest = manifest_for(members)
    elif damage == "no-manifest":
        manifest = None
    elif damage == "wrong-version":
        manifest = {**manifest_for(members), "version": 99}
    elif damage == "manifest-lies":
        members[2] = ("rootfs.data", b"ROOT")
    paths = Paths.from_env({"BANGER_HOME": str(tmp_path / "h")})
    with pytest.raises(BundleCorrupt):
        import_bundle(bundle_of(tmp_path, members, manifest), paths=paths)
    assert list(paths.tmp_dir.iterdir()) == []
    assert not paths.images_dir.exists() or list(paths.images_dir.iterdir()) == []


def test_extent_dataclass_is_plain() -> None:
    assert Extent(1, 2) == Extent(1, 2)
