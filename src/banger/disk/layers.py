"""Frozen qcow2 layers: what snapshots and restored VMs share instead of copying.

A snapshot of a QEMU VM copies the VM's root overlay once (while it is
paused) into ``layer-<hex>.qcow2`` in the snapshot's directory and makes it
read-only: a **frozen layer**. A VM restored from the snapshot gets a new,
empty overlay ``root.qcow2`` backed by that layer, not a copy of it.

Who keeps a layer alive — no refcount table: every directory holding an
overlay (a VM's, a snapshot's) also holds a **hard link** of every layer in
its backing chain, and each overlay or layer names its backing layer by a
*relative* file name, which QEMU and ``qemu-img`` resolve against the
referencing file's own directory — so a VM directory reads its chain from its
own links. Removing a VM or snapshot directory drops its links; the last link
gone frees the data. The image's rootfs stays at the bottom of every chain by
its absolute path (the store pins the image for VMs and snapshots).

Nothing writes a layer: it is mode 0400, QEMU opens backing files read-only,
and banger runs no ``qemu-img commit``/``rebase`` on any disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from banger import proc
from banger.disk.durable import fsync_path, publish_file
from banger.disk.workdisk import sparse_copy
from banger.errors import BangerError, Conflict

_LAYER = re.compile(r"layer-[0-9a-f]{16}\.qcow2")
#: A layer's mode: read-only for the owner (the inode's, so every link's).
FROZEN_MODE = 0o400


def new_layer_name() -> str:
    """A fresh layer's file name, unique across every snapshot ever taken here."""
    return f"layer-{secrets.token_hex(8)}.qcow2"


def is_layer(name: str) -> bool:
    return _LAYER.fullmatch(name) is not None


def layers_in(directory: Path) -> list[str]:
    """The layer links a directory holds (sorted): its overlay's chain, by construction."""
    return sorted(p.name for p in directory.iterdir() if is_layer(p.name))


def chain_layers(chain: Sequence[dict[str, Any]]) -> list[str]:
    """The layers below the top of ``qemu-img info --backing-chain --output=json``.

    Each backing named by a relative name must be a layer (``layer-<hex>.qcow2``,
    no directory part: it lives beside the file naming it); the first absolute
    backing is the image's rootfs, and nothing below it may be a layer. Returns
    the layer names, top first (the top itself excluded).
    """
    names: list[str] = []
    for entry in chain:
        backing = entry.get("backing-filename")
        if backing is None:
            break
        backing = str(backing)
        if Path(backing).is_absolute():
            break  # the image's rootfs: the bottom of the chain
        if not is_layer(backing):
            raise BangerError(
                f"root disk {entry.get('filename')}: its backing file {backing!r} is not a "
                "banger layer (layer-<hex>.qcow2 beside it)"
            )
        names.append(backing)
    return names


def read_chain(top: Path) -> list[dict[str, Any]]:
    """``qemu-img info --backing-chain`` of ``top`` (``-U``: its QEMU may have it open)."""
    out = proc.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(top)], timeout=60
    ).out
    chain = json.loads(out)
    if not isinstance(chain, list):
        raise BangerError(f"qemu-img info of {top} did not answer a backing chain")
    return [entry for entry in chain if isinstance(entry, dict)]


def link_layers(names: Iterable[str], source: Path, dest: Path) -> list[Path]:
    """Hard links ``dest/NAME`` of ``source/NAME``; returns what it made (undone on failure).

    Across filesystems (a snapshots directory mounted apart from the VMs') a
    link cannot be made: the layer is copied instead (sparse, reflinked where
    the filesystem can), and frozen like the original.
    """
    made: list[Path] = []
    try:
        for name in names:
            if not is_layer(name):
                raise BangerError(f"{name!r} is not a layer file name")
            target = dest / name
            if os.path.lexists(target):
                raise Conflict(f"{target} already exists")
            made.append(target)
            try:
                os.link(source / name, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                sparse_copy(source / name, target)
                freeze(target)
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise
    return made


def freeze(layer: Path) -> None:
    """Make a copied overlay a layer: read-only from now on, and on disk."""
    layer.chmod(FROZEN_MODE)
    fsync_path(layer)


def overlay_argv(layer: str, dest: Path) -> list[str]:
    """``qemu-img create`` of an empty overlay on ``layer``, named relatively (beside it)."""
    if not is_layer(layer):
        raise BangerError(f"{layer!r} is not a layer file name")
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", layer, str(dest)]


def create_overlay(layer: str, dest: Path) -> None:
    """An empty overlay ``dest`` on ``dest.parent/layer``, published whole or not at all."""
    if dest.exists():
        raise Conflict(f"{dest} already exists")
    # the temporary name sits in the same directory, so the relative backing name
    # resolves the same before and after the rename
    tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
    try:
        proc.run(overlay_argv(layer, tmp), timeout=60)
        tmp.chmod(0o600)
        publish_file(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
