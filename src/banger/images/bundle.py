"""Image bundles: one file that moves an image between machines.

Format (version 1): a zstd stream (frame checksums on) of a POSIX tar whose
members come in this order:

====================  =========================================================
``image.json``        the image's metadata as published on the source machine
``rootfs.extents``    JSON ``{"size": N, "extents": [[offset, length], ...]}``:
                      the data ranges of ``rootfs.ext4`` (``SEEK_DATA`` /
                      ``SEEK_HOLE``), sorted, non-overlapping
``rootfs.data``       the bytes of those ranges, concatenated
``work-seed.extents`` the same for ``work-seed.ext4``
``work-seed.data``
``manifest.json``     ``{"format": "banger-bundle", "version": 1, "members":
                      {name: {"size": n, "sha256": hex}}}`` for every member above
====================  =========================================================

Holes are never stored (Python's tarfile cannot write GNU sparse members, and
an extent map is simpler to check), so a 2 GiB rootfs with 300 MiB of data
costs 300 MiB before compression, and is recreated sparse on import.

Import (:func:`import_bundle`) streams the bundle once into a staging
directory, hashing every member, and checks the manifest (every member
present, nothing extra, sizes and digests equal) *before* anything is
published through :func:`banger.images.publish.publish_image`. On any error
the staging directory is removed: nothing is left behind. Import needs no
root (the files are plain ext4 images, not trees).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from banger.errors import BangerError, Conflict, InvalidArgument, NotFound
from banger.images.common import Progress, check_image_name, no_progress
from banger.images.publish import (
    META_NAME,
    ImageEntry,
    ImageMeta,
    check_name_free,
    new_image_id,
    publish_image,
)
from banger.paths import Paths
from banger.rmtree import discard_tree

FORMAT = "banger-bundle"
VERSION = 1
MANIFEST = "manifest.json"
#: bundle member prefix → file name in the image directory
DISKS = {"rootfs": "rootfs.ext4", "work-seed": "work-seed.ext4"}
MEMBERS = (META_NAME, *(f"{d}.{kind}" for d in DISKS for kind in ("extents", "data")), MANIFEST)
_CHUNK = 1024 * 1024
_SMALL_LIMIT = 64 * 1024 * 1024  # image.json, extent maps, manifest: read into memory
ZSTD_LEVEL = 3


class BundleCorrupt(BangerError):
    """A bundle failed a check; nothing was imported."""

    http_status = 400
    exit_code = 2


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int


def data_extents(fd: int, size: int) -> list[Extent]:
    """The data ranges of an open file (holes skipped), via SEEK_DATA/SEEK_HOLE."""
    out: list[Extent] = []
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append(Extent(start, end - start))
        offset = end
    return out


class _ExtentReader(io.RawIOBase):
    """Reads the data ranges of a file one after another, hashing them."""

    def __init__(self, fd: int, extents: list[Extent]) -> None:
        self._fd = fd
        self._todo: Iterator[Extent] = iter(extents)
        self._pos = 0
        self._left = 0
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._left == 0:
            extent = next(self._todo, None)
            if extent is None:
                return 0
            self._pos, self._left = extent.offset, extent.length
        data = os.pread(self._fd, min(len(buffer), self._left, _CHUNK), self._pos)
        if not data:
            raise BangerError("an image file shrank while it was being exported")
        self._pos += len(data)
        self._left -= len(data)
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, sums: dict[str, Any]) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    sums[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _add_disk(tar: tarfile.TarFile, prefix: str, path: Path, sums: dict[str, Any]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        extents = data_extents(fd, size)
        extent_map = {"size": size, "extents": [[e.offset, e.length] for e in extents]}
        _add_bytes(tar, f"{prefix}.extents", json.dumps(extent_map).encode(), sums)
        info = tarfile.TarInfo(f"{prefix}.data")
        info.size = sum(e.length for e in extents)
        info.mode = 0o644
        reader = _ExtentReader(fd, extents)
        tar.addfile(info, io.BufferedReader(reader, _CHUNK))
        sums[info.name] = {"size": info.size, "sha256": reader.sha256.hexdigest()}
    finally:
        os.close(fd)


def export_bundle(
    entry: ImageEntry, out_file: Path, progress: Progress = no_progress, *, overwrite: bool = False
) -> Path:
    """Write ``entry`` as a bundle to ``out_file`` (written aside, renamed when complete)."""
    out_file = out_file.absolute()
    if out_file.exists() and not overwrite:
        raise Conflict(f"{out_file} exists already", hint="pick another file name or remove it")
    if not out_file.parent.is_dir():
        raise NotFound(f"directory {out_file.parent} does not exist")
    partial = out_file.with_name(f".{out_file.name}.{secrets.token_hex(4)}.partial")
    sums: dict[str, Any] = {}
    try:
        with open(partial, "xb") as raw:
            compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
            with (
                compressor.stream_writer(raw, closefd=False) as zst,
                tarfile.open(fileobj=zst, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                _add_bytes(tar, META_NAME, (entry.path / META_NAME).read_bytes(), sums)
                for prefix, file_name in DISKS.items():
                    progress(f"exporting {file_name}")
                    _add_disk(tar, prefix, entry.path / file_name, sums)
                manifest = {"format": FORMAT, "version": VERSION, "members": sums}
                _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode(), {})
            raw.flush()
            os.fsync(raw.fileno())
        partial.rename(out_file)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    progress(f"wrote {out_file}")
    return out_file


# -- import ---------------------------------------------------------------------------
def _bad(path: Path, why: str) -> BundleCorrupt:
    return BundleCorrupt(
        f"bundle {path} is corrupt or incomplete: {why}",
        hint="copy the bundle again (or export it again on the source machine)",
    )


def _parse_extents(data: bytes, bundle: Path, name: str) -> tuple[int, list[Extent]]:
    try:
        doc = json.loads(data)
        size = int(doc["size"])
        extents = [Extent(int(o), int(n)) for o, n in doc["extents"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad(bundle, f"{name} is not an extent map ({exc})") from exc
    end = 0
    for extent in extents:
        if extent.offset < end or extent.length <= 0 or extent.offset + extent.length > size:
            raise _bad(bundle, f"{name} has an invalid extent {extent}")
        end = extent.offset + extent.length
    if size < 0:
        raise _bad(bundle, f"{name} has a negative size")
    return size, extents


def _write_extents(
    src: IO[bytes], out: Path, size: int, extents: list[Extent], bundle: Path, name: str
) -> str:
    """Recreate a sparse file from its data stream; returns the stream's sha256."""
    sha = hashlib.sha256()
    with open(out, "xb") as f:
        for extent in extents:
            f.seek(extent.offset)
            left = extent.length
            while left:
                chunk = src.read(min(left, _CHUNK))
                if not chunk:
                    raise _bad(bundle, f"{name} ends early")
                sha.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        if src.read(1):
            raise _bad(bundle, f"{name} is longer than its extent map")
        f.truncate(size)
    return sha.hexdigest()


def _read_small(src: IO[bytes], size: int, bundle: Path, name: str) -> bytes:
    if size > _SMALL_LIMIT:
        raise _bad(bundle, f"{name} is implausibly large ({size} bytes)")
    return src.read()


def _unpack(bundle: Path, stage: Path, progress: Progress) -> dict[str, bytes]:
    """Stream the bundle into ``stage``; check every member; returns image.json's bytes."""
    seen: dict[str, dict[str, Any]] = {}
    small: dict[str, bytes] = {}
    maps: dict[str, tuple[int, list[Extent]]] = {}
    with open(bundle, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                name = member.name
                if name not in MEMBERS or name in seen:
                    raise _bad(bundle, f"unexpected member {name!r}")
                if not member.isreg():
                    raise _bad(bundle, f"member {name!r} is not a regular file")
                src = tar.extractfile(member)
                assert src is not None
                prefix, _, kind = name.rpartition(".")
                if kind == "data":
                    if prefix not in maps:
                        raise _bad(bundle, f"{name} comes before its extent map")
                    size, extents = maps[prefix]
                    if member.size != sum(e.length for e in extents):
                        raise _bad(bundle, f"{name} does not match its extent map")
                    progress(f"importing {DISKS[prefix]}")
                    digest = _write_extents(src, stage / DISKS[prefix], size, extents, bundle, name)
                else:
                    data = _read_small(src, member.size, bundle, name)
                    small[name] = data
                    digest = hashlib.sha256(data).hexdigest()
                    if kind == "extents":
                        maps[prefix] = _parse_extents(data, bundle, name)
                seen[name] = {"size": member.size, "sha256": digest}
    _check_manifest(bundle, small.get(MANIFEST), seen)
    return small


def _check_manifest(bundle: Path, data: bytes | None, seen: dict[str, dict[str, Any]]) -> None:
    if data is None:
        raise _bad(bundle, f"{MANIFEST} is missing")
    try:
        manifest = json.loads(data)
        fmt, version, members = manifest["format"], manifest["version"], manifest["members"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _bad(bundle, f"{MANIFEST} is unreadable ({exc})") from exc
    if fmt != FORMAT or version != VERSION:
        raise BundleCorrupt(
            f"bundle {bundle} has format {fmt!r} version {version!r}; this banger reads"
            f" {FORMAT} version {VERSION}",
            hint="export the image again with this banger version",
        )
    expected = set(MEMBERS) - {MANIFEST}
    if not isinstance(members, dict) or set(members) != expected:
        raise _bad(bundle, f"{MANIFEST} does not list exactly {sorted(expected)}")
    for name in sorted(expected):
        if name not in seen:
            raise _bad(bundle, f"member {name!r} is missing")
        if members[name] != seen[name]:
            raise _bad(bundle, f"member {name!r} does not match its sha256 in {MANIFEST}")


def import_bundle(
    path: Path,
    *,
    paths: Paths,
    name: str | None = None,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
) -> ImageEntry:
    """Verify every checksum of the bundle at ``path``, then publish it as an image."""
    path = path.absolute()
    if not path.is_file():
        raise NotFound(f"bundle {path} does not exist")
    if name is not None:
        check_name_free(paths.images_dir, check_image_name(name))
    image_id = new_image_id()
    paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stage = paths.tmp_dir / f"bundle-{image_id}"
    stage.mkdir(mode=0o700)
    try:
        try:
            small = _unpack(path, stage, progress)
        except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
            raise _bad(path, str(exc) or type(exc).__name__) from exc
        try:
            meta = json.loads(small[META_NAME])
            original_name = str(meta["name"])
            source = str(meta.get("source", ""))
            description = str(meta.get("description", ""))
            config = meta.get("config") or {}
            if not isinstance(config, dict):
                raise TypeError("config is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad(path, f"{META_NAME} is unreadable ({exc})") from exc
        final_name = name or original_name
        try:
            check_image_name(final_name)
        except InvalidArgument as exc:
            raise _bad(path, f"{META_NAME} names the image {final_name!r}") from exc
        progress(f"publishing image {final_name}")
        return publish_image(
            paths.images_dir,
            paths.tmp_dir,
            final_name,
            stage / DISKS["rootfs"],
            stage / DISKS["work-seed"],
            ImageMeta(
                source=f"bundle:{path}",
                description=description or f"imported from {source or 'a bundle'}",
                config=config,
            ),
            image_id=image_id,
            owner=owner,
        )
    finally:
        discard_tree(stage)
