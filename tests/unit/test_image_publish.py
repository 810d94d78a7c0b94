from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from banger.disk import durable
from banger.errors import Conflict, InvalidArgument
from banger.images.publish import ImageMeta, list_images, publish_image, read_image


def inputs(tmp: Path) -> tuple[Path, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    rootfs = tmp / "rootfs.ext4"
    with open(rootfs, "wb") as f:
        f.write(b"root")
        f.truncate(64 * 1024 * 1024)  # sparse
    seed = tmp / "work-seed.ext4"
    seed.write_bytes(b"seed")
    return rootfs, seed


def test_publish_is_whole_and_leaves_no_staging(tmp_path: Path) -> None:
    images, tmp = tmp_path / "images", tmp_path / "tmp"
    rootfs, seed = inputs(tmp_path / "in")
    entry = publish_image(
        images, tmp, "debian-bookworm", rootfs, seed, ImageMeta("debian:bookworm")
    )
    assert entry.path == images / entry.id
    assert sorted(p.name for p in entry.path.iterdir()) == [
        "image.json",
        "rootfs.ext4",
        "work-seed.ext4",
    ]
    assert list(tmp.iterdir()) == []
    assert not rootfs.exists() and not seed.exists()  # moved, not copied
    data = json.loads((entry.path / "image.json").read_text())
    assert data["name"] == "debian-bookworm" and data["source"] == "debian:bookworm"
    assert data["rootfs_size"] == 64 * 1024 * 1024
    assert data["rootfs_allocated"] < data["rootfs_size"]
    assert data["finalize_version"] == 1 and data["init_modes"] == ["systemd", "fast"]
    assert read_image(entry.path) == entry
    assert list_images(images) == [entry]
    assert stat.S_IMODE(entry.rootfs.stat().st_mode) == 0o444


def test_same_name_conflicts(tmp_path: Path) -> None:
    images, tmp = tmp_path / "images", tmp_path / "tmp"
    publish_image(images, tmp, "one", *inputs(tmp_path / "a"), ImageMeta("x"))
    with pytest.raises(Conflict, match="'one'"):
        publish_image(images, tmp, "one", *inputs(tmp_path / "b"), ImageMeta("x"))
    with pytest.raises(InvalidArgument, match="image name"):
        publish_image(images, tmp, "../evil", *inputs(tmp_path / "c"), ImageMeta("x"))


def test_failure_mid_publish_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, tmp = tmp_path / "images", tmp_path / "tmp"
    real_fsync = durable.fsync_path
    calls: list[Path] = []

    def failing_fsync(path: Path) -> None:
        calls.append(path)
        if path.name == "image.json":
            raise OSError(5, "Input/output error (injected)")
        real_fsync(path)

    # The one fault injected here is a disk error: the code under test is real.
    monkeypatch.setattr(durable, "fsync_path", failing_fsync)
    with pytest.raises(OSError, match="injected"):
        publish_image(images, tmp, "img", *inputs(tmp_path / "a"), ImageMeta("x"))
    assert calls
    assert list(images.iterdir()) == []
    assert list(tmp.iterdir()) == []


@pytest.mark.root
def test_publish_for_the_owner(tmp_path: Path) -> None:
    images, tmp = tmp_path / "images", tmp_path / "tmp"
    entry = publish_image(
        images, tmp, "img", *inputs(tmp_path / "a"), ImageMeta("x"), owner=(65534, 65534)
    )
    for path in (entry.path, entry.rootfs, entry.work_seed, entry.path / "image.json"):
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == (65534, 65534)
