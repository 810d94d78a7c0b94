"""The parts of an OCI image banger reads: manifest layers and the image config.

Only what the pull needs: the layer list in order (digest, media type) from
the manifest, and from the config blob the platform (checked: linux/amd64)
plus ``Env``, ``WorkingDir`` and ``User``, which are recorded with the image
so ``banger image show`` can tell what the image author meant. Malformed
documents raise :class:`BadImage` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from banger.errors import BangerError

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")

#: Layer media types banger can apply (compression is detected from the
#: bytes; the type only has to say "a filesystem layer").
LAYER_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    }
)


class BadImage(BangerError):
    """The image's manifest or config is not something banger can use."""

    http_status = 400
    exit_code = 2


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Manifest:
    config_digest: str
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class ImageConfig:
    """What the image author set for processes: applied in the guest by oci/guestenv.py."""

    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    os: str = "linux"
    architecture: str = "amd64"

    def to_json(self) -> dict[str, Any]:
        return {"Env": list(self.env), "WorkingDir": self.working_dir, "User": self.user}

    def summary(self) -> str:
        """One line for ``image show``: ``User=…; WorkingDir=…; Env=A=1 B=2``."""
        parts = [f"User={self.user or 'root'}", f"WorkingDir={self.working_dir or '/'}"]
        if self.env:
            parts.append("Env=" + " ".join(self.env))
        return "; ".join(parts)


def check_digest(digest: object, where: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
        raise BadImage(f"{where}: {digest!r} is not a sha256 digest")
    return digest


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BadImage(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadImage(f"{what} is not a JSON object")
    return doc


def parse_manifest(data: bytes) -> Manifest:
    doc = _load(data, "image manifest")
    config = doc.get("config")
    if not isinstance(config, dict):
        raise BadImage("image manifest: config is missing")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise BadImage("image manifest: layers is missing")
    layers = []
    for i, raw in enumerate(raw_layers):
        if not isinstance(raw, dict):
            raise BadImage(f"image manifest: layers[{i}] is not an object")
        media_type = str(raw.get("mediaType", ""))
        if media_type not in LAYER_MEDIA_TYPES:
            raise BadImage(
                f"image manifest: layers[{i}].mediaType {media_type!r} is not a filesystem layer",
                hint="banger pulls container images (tar layers, gzip or zstd)",
            )
        size = raw.get("size", 0)
        layers.append(
            Layer(
                check_digest(raw.get("digest"), f"image manifest: layers[{i}].digest"),
                media_type,
                size if isinstance(size, int) else 0,
            )
        )
    return Manifest(check_digest(config.get("digest"), "image manifest: config.digest"),
                    tuple(layers))  # fmt: skip


def parse_config(data: bytes) -> ImageConfig:
    doc = _load(data, "image config")
    os_name = str(doc.get("os", ""))
    arch = str(doc.get("architecture", ""))
    if (os_name, arch) != ("linux", "amd64"):
        raise BadImage(
            f"image config: platform {os_name}/{arch} is not linux/amd64",
            hint="banger guests are x86-64 Linux; pull the linux/amd64 variant",
        )
    proc_config = doc.get("config") or {}
    if not isinstance(proc_config, dict):
        raise BadImage("image config: config is not an object")
    env = proc_config.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise BadImage("image config: config.Env is not a list of strings")
    working_dir = proc_config.get("WorkingDir") or ""
    user = proc_config.get("User") or ""
    if not isinstance(working_dir, str) or not isinstance(user, str):
        raise BadImage("image config: config.WorkingDir and config.User must be strings")
    return ImageConfig(tuple(env), working_dir, user, os_name, arch)
