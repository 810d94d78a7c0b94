"""Frozen-layer planning without qemu-img: which backing files a chain links, names, argv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from banger.disk import layers
from banger.errors import BangerError

A = "layer-0123456789abcdef.qcow2"
B = "layer-fedcba9876543210.qcow2"
IMAGE = "/state/images/abc/rootfs.ext4"


def entry(filename: str, backing: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"filename": filename, "format": "qcow2"}
    if backing is not None:
        out["backing-filename"] = backing
    return out


def test_a_booted_vm_has_no_layers_below_its_overlay() -> None:
    chain = [entry("/s/vms/v/root.qcow2", IMAGE), {"filename": IMAGE, "format": "raw"}]
    assert layers.chain_layers(chain) == []


def test_a_restored_vm_links_every_layer_of_its_chain_top_first() -> None:
    chain = [
        entry("/s/vms/v/root.qcow2", B),
        entry(f"/s/vms/v/{B}", A),
        entry(f"/s/vms/v/{A}", IMAGE),
        {"filename": IMAGE, "format": "raw"},
    ]
    assert layers.chain_layers(chain) == [B, A]


@pytest.mark.parametrize(
    "backing", ["../snapshots/x/" + A, "sub/" + A, "root.qcow2", "layer-XYZ.qcow2", A + ".tmp"]
)
def test_a_relative_backing_must_be_a_layer_beside_it(backing: str) -> None:
    with pytest.raises(BangerError, match="is not a banger layer"):
        layers.chain_layers([entry("/s/vms/v/root.qcow2", backing)])


def test_layer_names_are_fresh_and_recognised() -> None:
    names = {layers.new_layer_name() for _ in range(50)}
    assert len(names) == 50 and all(layers.is_layer(n) for n in names)
    assert not layers.is_layer("root.qcow2") and not layers.is_layer(f"x{A}")


def test_layers_in_lists_only_layer_files(tmp_path: Path) -> None:
    for name in (B, A, "root.qcow2", "work.ext4", f".{A}.tmp-1"):
        (tmp_path / name).write_text("")
    assert layers.layers_in(tmp_path) == sorted([A, B])


def test_overlay_argv_names_the_layer_relatively() -> None:
    argv = layers.overlay_argv(A, Path("/s/vms/v/.root.qcow2.tmp-1"))
    assert argv == [
        "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", A,
        "/s/vms/v/.root.qcow2.tmp-1",
    ]  # fmt: skip
    with pytest.raises(BangerError, match="not a layer file name"):
        layers.overlay_argv("/abs/" + A, Path("/s/x"))


def test_links_made_before_a_failure_are_undone(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / A).write_text("a")
    with pytest.raises(FileNotFoundError):
        layers.link_layers([A, B], src, dest)  # B is missing
    assert list(dest.iterdir()) == []
    assert layers.link_layers([A], src, dest) == [dest / A]
    assert (dest / A).stat().st_nlink == 2
