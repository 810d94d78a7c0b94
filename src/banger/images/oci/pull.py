"""``banger image pull REF``: the entry point the daemon's helper calls.

``pull_image`` dispatches on the reference:

- ``bundle:PATH`` or ``bundle:https://…`` → :func:`banger.images.bundle.import_bundle`
  (no root needed; a URL is downloaded into ``tmp/`` first and removed after);
- anything else is an OCI reference (:mod:`banger.images.oci.ref`) → fetch
  into the shared cache (no root needed) → flatten (root) → install missing
  systemd/sshd/tmux (root, :mod:`banger.images.foreign`) →
  :func:`banger.images.build.image_from_tree` (finalize, mkfs, publish).

The OCI path runs as root inside banger-helper: flatten writes files owned
by other users, device nodes and capabilities, and mkfs must read them all.
``owner`` is the daemon's (uid, gid): the published image and the cache
entries this pull created are handed to it.

The image config (``Env``, ``WorkingDir``, ``User``) is applied in the guest
(:mod:`banger.images.oci.guestenv`) and recorded as the
image's structured ``config`` field (and summarised in its description); the
digest the ref resolved to ends its ``source``. ``banger image show`` shows
both. :func:`image_from_layers` is the root half on its own: banger-helper's
``image_pull`` op runs it on layers the owner's daemon fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from banger.errors import InvalidArgument
from banger.images.build import DEFAULT_ROOTFS_SIZE, build_dir, image_from_tree
from banger.images.bundle import import_bundle
from banger.images.common import Progress, check_image_name, no_progress, require_root
from banger.images.foreign import finalize_foreign
from banger.images.oci.budget import DEFAULT_MAX_UNPACKED
from banger.images.oci.config import ImageConfig
from banger.images.oci.flatten import flatten_layers
from banger.images.oci.guestenv import apply_image_config
from banger.images.oci.layers import FetchedImage, OciCache, fetch
from banger.images.oci.ref import OciRef, RegistryRef, image_name_for, parse_ref
from banger.images.oci.skopeo import SkopeoOptions
from banger.images.publish import ImageEntry, ImageMeta, check_name_free, new_image_id
from banger.paths import Paths
from banger.rmtree import discard_tree

BUNDLE_PREFIX = "bundle:"
DOWNLOAD_TIMEOUT = 3600.0


def pull_oci(
    ref: str | OciRef,
    *,
    paths: Paths,
    options: SkopeoOptions | None = None,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
) -> FetchedImage:
    """Fetch ``ref`` (linux/amd64) into ``cache_dir/oci``; downloads only missing blobs."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    return fetch(parsed, OciCache(paths.cache_dir, owner), options, progress)


def source_of(fetched: FetchedImage, ref: OciRef) -> str:
    """``docker.io/library/debian:bookworm@sha256:…`` (archives: the stored manifest digest)."""
    if isinstance(ref, RegistryRef) and fetched.source_digest:
        return str(ref.with_digest(fetched.source_digest))
    return f"{ref}@{fetched.manifest_digest}"


def describe(fetched: FetchedImage, installed: tuple[str, ...]) -> str:
    return describe_config(fetched.config, installed)


def describe_config(config: ImageConfig, installed: tuple[str, ...]) -> str:
    text = f"OCI image; {config.summary()}"
    if installed:
        text += f"; banger installed {' '.join(installed)}"
    return text


def _download(url: str, dest: Path, progress: Progress) -> None:
    import httpx

    progress(f"downloading {url}")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=60.0) as response:
            response.raise_for_status()
            with open(dest, "xb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise InvalidArgument(f"bundle URL {url} could not be downloaded: {exc}") from exc


def pull_bundle(
    location: str,
    *,
    paths: Paths,
    name: str | None,
    owner: tuple[int, int] | None,
    progress: Progress,
) -> ImageEntry:
    if location.startswith(("https://", "http://")):
        paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = build_dir(paths, new_image_id())
        try:
            _download(location, work / "download.bundle", progress)
            return import_bundle(work / "download.bundle", paths=paths, name=name, owner=owner,
                                 progress=progress)  # fmt: skip
        finally:
            discard_tree(work)
    path = Path(location)
    if not path.is_absolute():
        raise InvalidArgument(
            f"bundle path {location!r} must be absolute", hint="the CLI makes it absolute"
        )
    return import_bundle(path, paths=paths, name=name, owner=owner, progress=progress)


def pull_image(
    ref: str,
    *,
    paths: Paths,
    name: str | None = None,
    progress: Progress = no_progress,
    owner: tuple[int, int] | None = None,
    options: SkopeoOptions | None = None,
    rootfs_size: int = DEFAULT_ROOTFS_SIZE,
    install_missing: bool = True,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> ImageEntry:
    """Pull ``ref`` (OCI reference or ``bundle:…``) and publish it as image ``name``."""
    if ref.startswith(BUNDLE_PREFIX):
        return pull_bundle(ref.removeprefix(BUNDLE_PREFIX), paths=paths, name=name, owner=owner,
                           progress=progress)  # fmt: skip
    parsed = parse_ref(ref)
    name = check_name_free(paths.images_dir, check_image_name(name or image_name_for(parsed)))
    require_root(f"pulling {ref}")
    fetched = pull_oci(parsed, paths=paths, options=options, owner=owner, progress=progress)
    return image_from_layers(
        fetched.layers(),
        paths=paths,
        name=name,
        source=source_of(fetched, parsed),
        config=fetched.config,
        owner=owner,
        progress=progress,
        rootfs_size=rootfs_size,
        install_missing=install_missing,
        max_unpacked=max_unpacked,
    )


def image_from_layers(
    layers: Sequence[tuple[str, Path]],
    *,
    paths: Paths,
    name: str,
    source: str,
    config: ImageConfig,
    owner: tuple[int, int] | None = None,
    progress: Progress = no_progress,
    rootfs_size: int = DEFAULT_ROOTFS_SIZE,
    install_missing: bool = True,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> ImageEntry:
    """Flatten fetched ``layers`` (digest, blob), make the tree bootable, publish. Root only.

    The second half of a pull, on its own so banger-helper can run it on
    layers the owner's daemon fetched (the download needs no root).
    """
    require_root(f"flattening {source}")
    check_name_free(paths.images_dir, check_image_name(name))
    image_id = new_image_id()
    work = build_dir(paths, image_id)
    try:
        tree = work / "tree"
        flatten_layers(layers, tree, progress, max_unpacked=max_unpacked)
        installed = finalize_foreign(tree, progress=progress, install=install_missing)
        apply_image_config(tree, config, progress)  # Env, WorkingDir, User (guestenv.py)
        meta = ImageMeta(source=source, description=describe_config(config, installed),
                         config=config.to_json())  # fmt: skip
        return image_from_tree(tree, work, paths=paths, name=name, meta=meta, image_id=image_id,
                               rootfs_size=rootfs_size, owner=owner, progress=progress)  # fmt: skip
    finally:
        discard_tree(work)
