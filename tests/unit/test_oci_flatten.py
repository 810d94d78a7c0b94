"""Flattening OCI layers (as root): OCI semantics and hostile layers, on real files."""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from banger.images.oci.config import BadImage
from banger.images.oci.flatten import HostileLayer, flatten_layers
from tests.registry import (
    CAP_NET_RAW_EP,
    LAYER_GZIP,
    LAYER_TAR,
    LAYER_ZSTD,
    Entry,
    chardev,
    directory,
    file,
    hardlink,
    opaque,
    symlink,
    whiteout,
    write_layout,
)
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]


def flatten(tmp: Path, layers: Sequence[Sequence[Entry]], media_type: str = LAYER_GZIP,
            raw_layers: Sequence[bytes] = ()) -> Path:  # fmt: skip
    image = write_layout(tmp / "layout", layers, media_type=media_type, raw_layers=raw_layers)
    blobs = tmp / "layout" / "blobs" / "sha256"
    tree = tmp / "tree"
    flatten_layers([(d, blobs / d.removeprefix("sha256:")) for d in image.layer_digests], tree)
    return tree


BASE = [
    directory("etc"),
    file("etc/keep", b"keep"),
    file("etc/gone", b"gone"),
    directory("etc/gonedir"),
    file("etc/gonedir/inner", b"x"),
    directory("opt/app"),
    file("opt/app/old1", b"1"),
    directory("opt/app/sub"),
    file("opt/app/sub/old2", b"2"),
    file("usr/bin/tool", b"#!/bin/sh\n", 0o755),
    file("usr/bin/passwd", b"ELF", 0o4755),
    file("usr/bin/ping", b"ELF", 0o755, xattrs={"security.capability": CAP_NET_RAW_EP}),
    file("home/u/file", b"mine", 0o600, uid=1000, gid=1001),
    directory("tmp", 0o1777),
    symlink("bin", "usr/bin"),
    chardev("dev/null", 1, 3),
]
TOP = [
    whiteout("etc/gone"),
    whiteout("etc/gonedir"),
    directory("opt/app"),
    file("opt/app/new", b"new"),
    opaque("opt/app"),
    hardlink("usr/bin/tool-link", "usr/bin/tool"),
    file("etc/added", b"added"),
]


@pytest.mark.parametrize("media_type", [LAYER_GZIP, LAYER_ZSTD, LAYER_TAR])
def test_layers_apply_with_oci_semantics(short_tmp: Path, media_type: str) -> None:
    tree = flatten(short_tmp, [BASE, TOP], media_type)
    assert (tree / "etc/keep").read_bytes() == b"keep"
    assert not (tree / "etc/gone").exists()
    assert not (tree / "etc/gonedir").exists()
    assert not list(tree.rglob(".wh.*"))
    # Opaque: the lower content is gone, the same layer's file stays.
    assert sorted(p.name for p in (tree / "opt/app").iterdir()) == ["new"]
    # Hard link to a file of the lower layer: one inode.
    assert (tree / "usr/bin/tool-link").stat().st_ino == (tree / "usr/bin/tool").stat().st_ino
    passwd = (tree / "usr/bin/passwd").stat()
    assert stat.S_IMODE(passwd.st_mode) == 0o4755
    assert os.getxattr(tree / "usr/bin/ping", "security.capability") == CAP_NET_RAW_EP
    home = (tree / "home/u/file").stat()
    assert (home.st_uid, home.st_gid, stat.S_IMODE(home.st_mode)) == (1000, 1001, 0o600)
    assert stat.S_IMODE((tree / "tmp").stat().st_mode) == 0o1777
    assert os.readlink(tree / "bin") == "usr/bin"
    null = (tree / "dev/null").lstat()
    assert (
        stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    )
    assert (tree / "etc/keep").stat().st_mtime == 1_700_000_000


def test_upper_layer_replaces_types(short_tmp: Path) -> None:
    tree = flatten(
        short_tmp,
        [
            [file("a", b"file"), directory("b"), file("b/x"), symlink("c", "/nowhere")],
            [directory("a"), file("a/inside"), file("b", b"now a file"), file("c", b"real")],
        ],
    )
    assert (tree / "a/inside").is_file()
    assert (tree / "b").read_bytes() == b"now a file"
    assert not (tree / "c").is_symlink() and (tree / "c").read_bytes() == b"real"


def test_whiteout_spares_what_the_same_layer_creates(short_tmp: Path) -> None:
    tree = flatten(short_tmp, [[file("x", b"old")], [file("x", b"new"), whiteout("x")]])
    assert (tree / "x").read_bytes() == b"new"


def test_corrupt_layer_is_refused(short_tmp: Path) -> None:
    image = write_layout(short_tmp / "layout", [[file("a", b"a" * 1000)]], media_type=LAYER_TAR)
    blob = short_tmp / "layout/blobs/sha256" / image.layer_digests[0].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[600] ^= 1  # inside the file content: tar still parses
    blob.write_bytes(bytes(data))
    with pytest.raises(BadImage, match="does not match its digest"):
        flatten_layers([(image.layer_digests[0], blob)], short_tmp / "tree")


# -- hostile layers -------------------------------------------------------------------
def raw_tar(*members: tuple[str, bytes, str]) -> bytes:
    """A tar with names tarfile would not let tests build through ``Entry`` helpers."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def hostile_cases(sentinel: Path) -> dict[str, tuple[list[list[Entry]], bytes | None, str]]:
    """name → (layers, extra raw layer, entry path expected in the error)."""
    s = str(sentinel)
    return {
        "dotdot": ([[file("etc/x")]], raw_tar(("../../escape", tarfile.REGTYPE, "")),
                   "../../escape"),
        "dotdot-inner": ([], raw_tar(("etc/../../escape", tarfile.REGTYPE, "")),
                         "etc/../../escape"),
        "absolute": ([], raw_tar((f"{s}/abs", tarfile.REGTYPE, "")), f"{s}/abs"),
        "symlink-parent-lower": ([[symlink("evil", s)], [file("evil/pwned", b"x")]], None,
                                 "evil/pwned"),
        "symlink-parent-same": ([[symlink("evil", s), file("evil/pwned", b"x")]], None,
                                "evil/pwned"),
        "symlink-parent-relative": ([[symlink("up", "../../../../../../.."),
                                      file(f"up{s}/pwned", b"x")]], None, f"up{s}/pwned"),
        "hardlink-outside": ([], raw_tar(("h", tarfile.LNKTYPE, f"../../../..{s}/secret")),
                             "h"),
        "hardlink-absolute": ([], raw_tar(("h", tarfile.LNKTYPE, f"{s}/secret")), "h"),
        "hardlink-through-symlink": ([[symlink("d", s), hardlink("h", "d/secret")]], None,
                                     "h"),
        "whiteout-dotdot": ([[directory("etc")]], raw_tar(("etc/.wh...", tarfile.REGTYPE, "")),
                            "etc/.wh..."),
        "whiteout-through-symlink": ([[symlink("evil", s)], [whiteout("evil/secret")]], None,
                                     "evil/.wh.secret"),
        "opaque-through-symlink": ([[symlink("evil", s)], [opaque("evil")]], None,
                                   "evil/.wh..wh..opq"),
    }  # fmt: skip


CASES = sorted(hostile_cases(Path("/x")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_layer_is_refused_and_writes_nothing_outside(short_tmp: Path, case: str) -> None:
    sentinel = short_tmp / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_text("secret")
    work = short_tmp / "work"
    work.mkdir()
    layers, raw, entry = hostile_cases(sentinel)[case]
    image = write_layout(
        work / "layout", layers, media_type=LAYER_TAR, raw_layers=[raw] if raw else []
    )
    blobs = work / "layout/blobs/sha256"
    pairs = [(d, blobs / d.removeprefix("sha256:")) for d in image.layer_digests]
    before = sorted(p.name for p in short_tmp.iterdir())
    with pytest.raises(HostileLayer) as err:
        flatten_layers(pairs, work / "tree")
    assert image.layer_digests[-1] in str(err.value)
    assert repr(entry) in str(err.value)
    assert sorted(p.name for p in sentinel.iterdir()) == ["secret"]
    assert (sentinel / "secret").read_text() == "secret"
    assert (sentinel / "secret").stat().st_nlink == 1
    assert sorted(p.name for p in short_tmp.iterdir()) == before
    assert not (short_tmp.parent / "escape").exists()


def test_symlink_entries_are_kept_for_the_guest_and_never_written_through(short_tmp: Path) -> None:
    sentinel = short_tmp / "sentinel"
    sentinel.mkdir()
    (sentinel / "f").write_text("host")
    tree = flatten(short_tmp, [[symlink("link", str(sentinel / "f"))], [file("link", b"guest")]])
    assert (sentinel / "f").read_text() == "host"
    assert (tree / "link").read_bytes() == b"guest"
