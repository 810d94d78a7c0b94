"""Flatten's limits (issue #22 item 4): names the filesystem cannot hold and layers
that expand past the cap or the free space are refused naming the layer and entry,
before anything of the entry is written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from banger import proc
from banger.diskfull import DiskFull
from banger.images.oci.budget import ImageTooLarge
from banger.images.oci.flatten import HostileLayer, flatten_layers
from tests.registry import LAYER_ZSTD, Entry, directory, file, symlink, write_layout
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]
MiB = 1024 * 1024


def flatten(tmp: Path, layers: Sequence[Sequence[Entry]], tree: Path | None = None,
            **kw: int) -> tuple[Path, list[str]]:  # fmt: skip
    image = write_layout(tmp / "layout", layers, media_type=LAYER_ZSTD)
    blobs = tmp / "layout" / "blobs" / "sha256"
    tree = tree or tmp / "tree"
    pairs = [(d, blobs / d.removeprefix("sha256:")) for d in image.layer_digests]
    flatten_layers(pairs, tree, max_unpacked=kw.get("max_unpacked", 1 << 40))
    return tree, image.layer_digests


def test_a_name_component_over_255_bytes_is_refused_naming_layer_and_entry(
    short_tmp: Path,
) -> None:
    long_name = "etc/" + "n" * 300
    with pytest.raises(HostileLayer) as err:
        flatten(short_tmp, [[directory("etc")], [file(long_name, b"x")]])
    digest = write_layout(short_tmp / "again", [[directory("etc")], [file(long_name, b"x")]],
                          media_type=LAYER_ZSTD).layer_digests[1]  # fmt: skip
    message = str(err.value)
    assert message.startswith(f"layer {digest} is refused: entry 'etc/nnn")
    assert "name component over 255 bytes" in message
    assert err.value.hint and "255" in err.value.hint
    assert (
        not (short_tmp / "tree" / "etc").exists() or list((short_tmp / "tree/etc").iterdir()) == []
    )


def test_a_path_too_long_for_the_host_is_refused_not_a_raw_oserror(short_tmp: Path) -> None:
    deep = "/".join(["d" * 200] * 21) + "/leaf"  # every component fits, the path does not
    with pytest.raises(HostileLayer) as err:
        flatten(short_tmp, [[file(deep, b"x")]])
    assert "too long for the filesystem" in str(err.value)
    assert "…" in str(err.value) and len(str(err.value)) < 400  # the entry, shortened


def test_a_symlink_target_too_long_is_refused(short_tmp: Path) -> None:
    with pytest.raises(HostileLayer, match="too long for the filesystem"):
        flatten(short_tmp, [[symlink("link", "t/" * 2500)]])


def test_a_zero_bomb_is_refused_before_it_is_written(short_tmp: Path) -> None:
    """16 MiB of zeros (a few hundred bytes compressed) against a 4 MiB cap."""
    layers = [[directory("var"), file("var/small", b"s" * 1000), file("var/bomb", bytes(16 * MiB))]]
    with pytest.raises(ImageTooLarge) as err:
        flatten(short_tmp, layers, max_unpacked=4 * MiB)
    digest = write_layout(short_tmp / "again", layers, media_type=LAYER_ZSTD).layer_digests[0]
    blob = short_tmp / "again/blobs/sha256" / digest.removeprefix("sha256:")
    assert blob.stat().st_size < 64 * 1024  # it is a bomb: tiny compressed
    assert str(err.value) == (
        f"layer {digest} is refused: entry 'var/bomb' brings the unpacked image over the"
        " 4.0 MiB limit (images.max_unpacked_size)"
    )
    assert err.value.exit_code == 2
    assert (short_tmp / "tree/var/small").exists()
    assert not (short_tmp / "tree/var/bomb").exists()


@pytest.fixture
def small_fs(short_tmp: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs: a filesystem whose free space a test can exceed cheaply."""
    mnt = short_tmp / "small"
    mnt.mkdir()
    proc.run(["mount", "-t", "tmpfs", "-o", "size=32m", "banger-test", str(mnt)])
    try:
        yield mnt
    finally:
        proc.run(["umount", str(mnt)])


def test_more_than_the_free_space_stops_before_the_disk_is_full(
    short_tmp: Path, small_fs: Path
) -> None:
    layers = [[file("big", bytes(20 * MiB))]]
    with pytest.raises(DiskFull) as err:
        flatten(short_tmp, layers, tree=small_fs / "tree")
    message = str(err.value)
    assert message.startswith("image pull stopped: layer sha256:")
    assert "entry 'big' brings the unpacked image to 20.0 MiB" in message
    assert f"more than the space under {small_fs} allows" in message
    assert not (small_fs / "tree" / "big").exists()
    # Within the room, the same filesystem takes it.
    (short_tmp / "ok").mkdir()
    flatten(short_tmp / "ok", [[file("fits", bytes(4 * MiB))]], tree=small_fs / "tree2")
    assert (small_fs / "tree2" / "fits").stat().st_size == 4 * MiB
