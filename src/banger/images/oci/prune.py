"""``banger image prune``: drop the OCI cache's blobs that no image needs.

The layer cache (:mod:`banger.images.oci.layers`) only grows: every pull
adds its manifest, config and layers, and nothing removes them — not when an
image is removed, not when a pull was refused (a hostile layer, a bomb, an
image that cannot boot). What an image *needs* is what a re-pull of it would
find cached: the manifest its recorded digest leads to, that manifest's
config and its layers. :func:`plan_prune` keeps exactly those, for every
digest it is given (bangerd passes the digests of the images in its store),
and lists everything else in ``blobs/sha256/`` (skopeo's half-written
temporary files included) plus the ``refs/`` records of images no longer
kept. :func:`apply_prune` removes what a plan lists.

A recorded digest is the key of its ``refs/<hex>.json`` (a registry pull
records the manifest digest the reference resolved to, whose cached copy may
be a converted manifest with another digest) or, for an archive pull, the
cached manifest's own digest. A manifest that cannot be read keeps itself
only: pruning never guesses what a broken record meant.

The caller must keep pulls out while it plans and applies (bangerd holds its
cache gate exclusively: a running pull's blobs are not referenced yet).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from banger.images.oci.config import BadImage, parse_manifest
from banger.images.oci.layers import OciCache
from banger.rmtree import remove_tree


@dataclass(frozen=True)
class PrunedBlob:
    name: str  # the file name under blobs/sha256/ (a hex digest, or a temporary file)
    size: int

    @property
    def digest(self) -> str:
        return f"sha256:{self.name}"


@dataclass(frozen=True)
class PrunePlan:
    blobs: tuple[PrunedBlob, ...]
    refs: tuple[Path, ...]
    kept_blobs: int
    kept_bytes: int

    @property
    def bytes(self) -> int:
        return sum(b.size for b in self.blobs)


def _manifest_of(cache: OciCache, digest: str) -> str | None:
    """The cached manifest an image's recorded ``digest`` stands for (see the docstring)."""
    hex_ = digest.removeprefix("sha256:")
    record = cache.root / "refs" / f"{hex_}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        manifest = json.loads(record.read_text())["manifest"]
        if isinstance(manifest, str):
            return manifest
    return digest if (cache.blobs_dir / hex_).is_file() else None


def needed_blobs(cache: OciCache, image_digests: Iterable[str]) -> tuple[set[str], set[str]]:
    """(blob names, ref keys) the images with ``image_digests`` need."""
    names: set[str] = set()
    keys: set[str] = set()
    for digest in image_digests:
        keys.add(digest.removeprefix("sha256:"))
        manifest_digest = _manifest_of(cache, digest)
        if manifest_digest is None:
            continue
        names.add(manifest_digest.removeprefix("sha256:"))
        try:
            manifest = parse_manifest(cache.blob(manifest_digest).read_bytes())
        except (OSError, BadImage):
            continue
        for needed in (manifest.config_digest, *(layer.digest for layer in manifest.layers)):
            names.add(needed.removeprefix("sha256:"))
    return names, keys


def plan_prune(cache: OciCache, image_digests: Iterable[str]) -> PrunePlan:
    """What :func:`apply_prune` would remove, given the digests of every image kept."""
    names, keys = needed_blobs(cache, image_digests)
    pruned: list[PrunedBlob] = []
    kept = kept_bytes = 0
    if cache.blobs_dir.is_dir():
        for entry in sorted(os.scandir(cache.blobs_dir), key=lambda e: e.name):
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            if entry.name in names:
                kept += 1
                kept_bytes += size
            else:
                pruned.append(PrunedBlob(entry.name, size))
    refs_dir = cache.root / "refs"
    refs = (
        sorted(p for p in refs_dir.glob("*.json") if p.stem not in keys)
        if refs_dir.is_dir()
        else []
    )
    return PrunePlan(tuple(pruned), tuple(refs), kept, kept_bytes)


def apply_prune(cache: OciCache, plan: PrunePlan) -> int:
    """Remove what ``plan`` lists; the bytes freed (what was still there to remove)."""
    freed = 0
    for ref in plan.refs:  # records first: a ref never points at a missing blob for long
        ref.unlink(missing_ok=True)
    for blob in plan.blobs:
        path = cache.blobs_dir / blob.name
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except IsADirectoryError:  # a tool's temporary directory left in blobs/
            remove_tree(path)
        freed += blob.size
    return freed
