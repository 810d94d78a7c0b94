"""Bundles between two BANGER_HOMEs: identical bytes, sparse on import, corruption refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from banger.errors import Conflict
from banger.images.bundle import BundleCorrupt, export_bundle, import_bundle
from banger.images.ext4build import MiB, make_ext4_from_tree
from banger.images.publish import ImageEntry, ImageMeta, list_images, publish_image
from banger.paths import Paths
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
def image(short_tmp: Path) -> tuple[Paths, ImageEntry]:
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "a")})
    tree = short_tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hello").write_text("hello from a\n")
    (tree / "big").write_bytes(os.urandom(3 * MiB))
    home = short_tmp / "home"
    home.mkdir()
    (home / ".bashrc").write_text("PS1='$ '\n")
    make_ext4_from_tree(tree, short_tmp / "rootfs.ext4", 256 * MiB, "banger-root")
    make_ext4_from_tree(home, short_tmp / "seed.ext4", 64 * MiB, "banger-work")
    meta = ImageMeta("dir:/srv/x", "a test image")
    rootfs, seed = short_tmp / "rootfs.ext4", short_tmp / "seed.ext4"
    entry = publish_image(paths.images_dir, paths.tmp_dir, "src-image", rootfs, seed, meta)
    return paths, entry


def test_round_trip_keeps_bytes_and_sparseness(
    short_tmp: Path, image: tuple[Paths, ImageEntry]
) -> None:
    _, entry = image
    bundle = export_bundle(entry, short_tmp / "x.bundle")
    # Holes are not stored: far smaller than the 256 MiB filesystem.
    assert bundle.stat().st_size < 16 * MiB
    assert [p.name for p in short_tmp.iterdir() if p.name.endswith(".partial")] == []
    b = Paths.from_env({"BANGER_HOME": str(short_tmp / "b")})
    lines: list[str] = []
    imported = import_bundle(bundle, paths=b, progress=lines.append)
    assert imported.name == "src-image" and imported.description == "a test image"
    assert imported.source == f"bundle:{bundle}"
    for src, dst in ((entry.rootfs, imported.rootfs), (entry.work_seed, imported.work_seed)):
        assert sha(src) == sha(dst)
        assert dst.stat().st_size == src.stat().st_size
        assert dst.stat().st_blocks * 512 < src.stat().st_size // 4
    assert [e.name for e in list_images(b.images_dir)] == ["src-image"]
    assert list(b.tmp_dir.iterdir()) == []
    # A second import under another name works; the same name conflicts.
    assert import_bundle(bundle, paths=b, name="copy").name == "copy"
    with pytest.raises(Conflict):
        import_bundle(bundle, paths=b)
    assert list(b.tmp_dir.iterdir()) == []


@pytest.mark.parametrize("where", [0.0, 0.001, 0.3, 0.5, 0.9, 0.999, -1])
def test_a_flipped_byte_anywhere_is_refused_and_leaves_nothing(
    short_tmp: Path, image: tuple[Paths, ImageEntry], where: float
) -> None:
    _, entry = image
    bundle = export_bundle(entry, short_tmp / "x.bundle")
    data = bytearray(bundle.read_bytes())
    at = len(data) - 1 if where == -1 else int(len(data) * where)
    data[at] ^= 0x10
    bundle.write_bytes(bytes(data))
    b = Paths.from_env({"BANGER_HOME": str(short_tmp / "b")})
    with pytest.raises(BundleCorrupt):
        import_bundle(bundle, paths=b)
    assert list_images(b.images_dir) == []
    assert not b.images_dir.exists() or list(b.images_dir.iterdir()) == []
    assert list(b.tmp_dir.iterdir()) == []


def test_truncated_bundle_is_refused(short_tmp: Path, image: tuple[Paths, ImageEntry]) -> None:
    _, entry = image
    bundle = export_bundle(entry, short_tmp / "x.bundle")
    os.truncate(bundle, bundle.stat().st_size // 2)
    b = Paths.from_env({"BANGER_HOME": str(short_tmp / "b")})
    with pytest.raises(BundleCorrupt):
        import_bundle(bundle, paths=b)
    assert list(b.tmp_dir.iterdir()) == []


def test_pull_bundle_from_a_path_and_a_loopback_url(
    short_tmp: Path, image: tuple[Paths, ImageEntry]
) -> None:
    import functools
    import http.server
    import threading

    from banger.images.oci.pull import pull_image

    _, entry = image
    served = short_tmp / "served"
    served.mkdir()
    bundle = export_bundle(entry, served / "x.bundle")
    b = Paths.from_env({"BANGER_HOME": str(short_tmp / "b")})
    assert pull_image(f"bundle:{bundle}", paths=b, name="from-path").name == "from-path"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass

    with Quiet(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/x.bundle"
            got = pull_image(f"bundle:{url}", paths=b, name="from-url")
        finally:
            server.shutdown()
            thread.join()
    assert sha(got.rootfs) == sha(entry.rootfs)
    assert list(b.tmp_dir.iterdir()) == []
