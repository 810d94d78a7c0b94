"""The OCI cache: content-addressed blobs shared by every pull, one lock per image.

Layout under ``cache_dir/oci/``::

    blobs/sha256/<hex>   every blob (layers, configs, manifests), by digest
    pulls/<random>/      one OCI layout per running pull; its ``blobs`` is a
                         symlink to the shared ``blobs/``, so skopeo writes new
                         blobs straight into the cache and skips (does not
                         download) the blobs already there
    refs/<key>.json      which manifest a pinned reference resolved to
    locks/<key>.lock     flock: one pull of the same image at a time

``key`` is the manifest digest a registry reference resolves to (the tag is
resolved first, so two pulls of ``debian:bookworm`` share a key), or a hash
of an archive's path, size and mtime. Pulling the same image twice at once
therefore downloads once: the second pull waits on the lock, then finds every
blob in the cache. Two *different* images that share a layer and are pulled
at the same moment may both download it (skopeo renames each blob into place
atomically, so the cache stays consistent); sequential pulls share it.

skopeo verifies each blob's digest as it downloads; flatten verifies layers
again as it reads them (:mod:`banger.images.oci.flatten`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from banger.errors import NotFound
from banger.images.common import Progress, no_progress
from banger.images.oci import skopeo
from banger.images.oci.config import (
    BadImage,
    ImageConfig,
    Manifest,
    check_digest,
    parse_config,
    parse_manifest,
)
from banger.images.oci.ref import ArchiveRef, OciRef, RegistryRef
from banger.rmtree import discard_tree

LAYOUT_TAG = "banger"
_INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class FetchedImage:
    """An image whose blobs are all in the cache, ready to flatten."""

    ref: str  # as the user gave it, normalised
    source_digest: str | None  # registry manifest digest the ref resolved to
    manifest_digest: str  # of the manifest as stored in the cache
    manifest: Manifest
    config: ImageConfig
    layer_paths: tuple[Path, ...]  # blobs, in manifest order
    new_blobs: int  # blobs this pull added to the cache (0: nothing downloaded)

    def layers(self) -> list[tuple[str, Path]]:
        """(digest, blob path) of every layer, bottom first: what flatten takes."""
        digests = [layer.digest for layer in self.manifest.layers]
        return list(zip(digests, self.layer_paths, strict=True))


class OciCache:
    def __init__(self, cache_dir: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = cache_dir / "oci"
        self.owner = owner

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    def blob(self, digest: str) -> Path:
        return self.blobs_dir / check_digest(digest, "blob").removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.blob(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, config), its digest checked."""
        data = self.blob(digest).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise BadImage(
                f"cached blob {digest} is corrupt",
                hint=f"remove {self.blob(digest)} and pull again",
            )
        return data

    def _mkdirs(self) -> None:
        for path in (self.blobs_dir, self.root / "pulls", self.root / "refs", self.root / "locks"):
            path.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._chown(self.root.parent, self.root, self.root / "blobs", self.blobs_dir,
                    self.root / "pulls", self.root / "refs", self.root / "locks")  # fmt: skip

    def _chown(self, *paths: Path) -> None:
        """Hand what root created to the owner, whose daemon manages the cache."""
        if self.owner is None or os.geteuid() != 0:
            return
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, *self.owner, follow_symlinks=False)

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the pull lock of ``key`` (across threads and processes: flock)."""
        self._mkdirs()
        path = self.root / "locks" / f"{key}.lock"
        with open(path, "a") as lock:
            self._chown(path)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def blob_names(self) -> set[str]:
        if not self.blobs_dir.is_dir():
            return set()
        return {p.name for p in self.blobs_dir.iterdir()}

    # -- refs -------------------------------------------------------------------------
    def _ref_record(self, key: str) -> Path:
        return self.root / "refs" / f"{key}.json"

    def cached_manifest(self, key: str) -> str | None:
        """The manifest digest recorded for ``key`` if all its blobs are present."""
        try:
            digest = json.loads(self._ref_record(key).read_text())["manifest"]
            manifest = parse_manifest(self.read_blob(digest))
        except (OSError, ValueError, KeyError, TypeError, BadImage):
            return None
        needed = [manifest.config_digest, *(layer.digest for layer in manifest.layers)]
        return digest if all(self.has(d) for d in needed) else None

    def record(self, key: str, ref: str, manifest_digest: str) -> None:
        path = self._ref_record(key)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps({"ref": ref, "manifest": manifest_digest}) + "\n")
        self._chown(tmp)
        tmp.rename(path)

    # -- pulls ------------------------------------------------------------------------
    def new_layout(self) -> Path:
        """A fresh OCI layout for one skopeo copy, sharing the cache's blobs."""
        layout = self.root / "pulls" / secrets.token_hex(8)
        layout.mkdir(mode=0o755)
        (layout / "blobs").symlink_to(Path("..") / ".." / "blobs")
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n')
        return layout

    def adopt_new_blobs(self, before: set[str]) -> int:
        new = self.blob_names() - before
        self._chown(*(self.blobs_dir / name for name in new))
        return len(new)


def layout_manifest_digest(layout: Path, tag: str = LAYOUT_TAG) -> str:
    """The manifest digest tagged ``tag`` in ``layout``'s ``index.json``."""
    try:
        index = json.loads((layout / "index.json").read_text())
        manifests = index["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadImage(f"OCI layout {layout} has no usable index.json: {exc}") from exc
    for desc in manifests:
        annotations = desc.get("annotations") or {}
        if annotations.get("org.opencontainers.image.ref.name") == tag:
            if desc.get("mediaType") in _INDEX_MEDIA_TYPES:
                raise BadImage("skopeo stored an image index, not a linux/amd64 manifest")
            return check_digest(desc.get("digest"), "index.json manifest digest")
    raise BadImage(f"OCI layout {layout} has no manifest tagged {tag!r}")


def cache_key(ref: OciRef, source_digest: str | None) -> str:
    if source_digest is not None:
        return source_digest.removeprefix("sha256:")
    assert isinstance(ref, ArchiveRef)
    st = Path(ref.path).stat()
    ident = f"{ref}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    return "archive-" + hashlib.sha256(ident.encode()).hexdigest()


def fetch(
    ref: OciRef,
    cache: OciCache,
    options: skopeo.SkopeoOptions | None = None,
    progress: Progress = no_progress,
) -> FetchedImage:
    """Bring every blob of ``ref`` (linux/amd64) into ``cache``; download what is missing."""
    options = options or skopeo.SkopeoOptions()
    source_digest: str | None = None
    pinned: OciRef = ref
    if isinstance(ref, RegistryRef):
        progress(f"resolving {ref}")
        source_digest = ref.digest or skopeo.inspect_digest(ref, options)
        pinned = ref.with_digest(source_digest)
    if isinstance(ref, ArchiveRef) and not Path(ref.path).is_file():
        raise NotFound(f"image archive {ref.path} does not exist")
    key = cache_key(ref, source_digest)
    new_blobs = 0
    with cache.locked(key):
        manifest_digest = cache.cached_manifest(key)
        if manifest_digest is None:
            progress(f"downloading {pinned}")
            before = cache.blob_names()
            layout = cache.new_layout()
            try:
                skopeo.copy_to_layout(pinned, layout, LAYOUT_TAG, options)
                manifest_digest = layout_manifest_digest(layout)
            finally:
                discard_tree(layout)
            new_blobs = cache.adopt_new_blobs(before)
            cache.record(key, str(ref), manifest_digest)
        else:
            progress(f"{pinned}: every blob is cached")
        manifest = parse_manifest(cache.read_blob(manifest_digest))
        config = parse_config(cache.read_blob(manifest.config_digest))
    return FetchedImage(
        ref=str(ref),
        source_digest=source_digest,
        manifest_digest=manifest_digest,
        manifest=manifest,
        config=config,
        layer_paths=tuple(cache.blob(layer.digest) for layer in manifest.layers),
        new_blobs=new_blobs,
    )
