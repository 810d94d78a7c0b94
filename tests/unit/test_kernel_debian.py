"""Resolving and fetching Debian kernel packages: control parsing, the host's apt, a mirror.

The mirror is a real HTTP server on 127.0.0.1 serving a Packages.xz written
here; the apt tests ask the host's apt-cache (local lists, no network).
"""

from __future__ import annotations

import hashlib
import http.server
import lzma
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from banger.errors import BangerError, InvalidArgument
from banger.kernels.debian import (
    METAPACKAGE,
    cached_deb_path,
    fetch_kernel_deb,
    resolve_from_mirror,
    resolve_with_apt,
)
from banger.kernels.debian_control import compare_versions, first_dependency, parse_stanzas

needs_apt = pytest.mark.skipif(shutil.which("apt-cache") is None, reason="host has no apt")


def test_parse_stanzas_with_continuation_lines() -> None:
    text = "Package: a\nVersion: 1\nDescription: x\n more\n\n\nPackage: b\nVersion: 2\n"
    assert parse_stanzas(text) == [
        {"Package": "a", "Version": "1", "Description": "x\nmore"},
        {"Package": "b", "Version": "2"},
    ]


def test_first_dependency() -> None:
    depends = "initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-56-amd64 (= 6.1.192-2)"
    assert first_dependency(depends, "linux-image-") == ("linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert first_dependency("linux-image-x (>= 1)", "linux-image-") == ("linux-image-x", None)
    assert first_dependency("foo", "linux-image-") is None


@pytest.mark.parametrize(
    ("a", "b", "sign"),
    [
        ("6.1.192-2", "6.1.176-1", 1),
        ("6.1.99-1", "6.1.100-1", -1),
        ("1.0~rc1", "1.0", -1),
        ("1.0", "1.0+b1", -1),
        ("1:0.1", "2.0", 1),
        ("1.0-1", "1.0-1", 0),
        ("1.0a", "1.0", 1),
        ("1.0-1", "1.0-1~bpo1", 1),
    ],
)
def test_compare_versions_like_dpkg(a: str, b: str, sign: int) -> None:
    got = compare_versions(a, b)
    assert (got > 0) - (got < 0) == sign


@needs_apt
def test_apt_resolves_the_metapackage_to_its_image_package() -> None:
    pkg = resolve_with_apt(None)
    assert pkg.package.startswith("linux-image-") and pkg.package.endswith("-amd64")
    assert pkg.package != METAPACKAGE
    assert len(pkg.sha256) == 64
    assert pkg.deb_name.endswith("_amd64.deb")
    again = resolve_with_apt(pkg.version)
    assert again == pkg


@needs_apt
def test_apt_unknown_version_names_the_source_argument() -> None:
    with pytest.raises(InvalidArgument, match=r"^source: Debian kernel version 0\.0-0") as info:
        resolve_with_apt("0.0-0")
    assert info.value.hint is not None and "known versions" in info.value.hint


@needs_apt
def test_apt_without_lists_says_to_update(tmp_path: Path) -> None:
    no_lists = (
        *("-o", f"Dir::State::Lists={tmp_path}"),
        *("-o", "Dir::Cache::pkgcache="),
        *("-o", "Dir::Cache::srcpkgcache="),
    )
    with pytest.raises(BangerError, match="apt knows no linux-image-amd64") as info:
        resolve_with_apt(None, no_lists)
    assert info.value.hint is not None and "sudo apt-get update" in info.value.hint


# -- a mirror on loopback --------------------------------------------------------

DEB_V1 = b"!<arch>\nnot really a deb, version 1\n"
DEB_V2 = b"!<arch>\nnot really a deb, version 2\n"


def stanza(package: str, version: str, **fields: str) -> str:
    lines = [f"Package: {package}", f"Version: {version}", "Architecture: amd64"]
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return "\n".join(lines) + "\n"


def image(abi: str, version: str, data: bytes, sha: str | None = None) -> str:
    return stanza(
        f"linux-image-{abi}-amd64",
        version,
        Filename=f"pool/main/l/linux/linux-image-{abi}-amd64_{version}_amd64.deb",
        Size=str(len(data)),
        SHA256=sha or hashlib.sha256(data).hexdigest(),
        Description="Linux\n for 64-bit PCs",
    )


def write_mirror(root: Path, v2_sha: str | None = None) -> None:
    stanzas = [
        stanza("hello", "1.0", Filename="pool/h/hello.deb", SHA256="0" * 64),
        stanza(METAPACKAGE, "6.1.10-1", Depends="linux-image-6.1.0-10-amd64 (= 6.1.10-1)"),
        image("6.1.0-10", "6.1.10-1", DEB_V1),
        stanza(METAPACKAGE, "6.1.9-1", Depends="linux-image-6.1.0-9-amd64 (= 6.1.9-1)"),
        image("6.1.0-9", "6.1.9-1", DEB_V2, v2_sha),
    ]
    index = root / "dists/bookworm/main/binary-amd64/Packages.xz"
    index.parent.mkdir(parents=True)
    index.write_bytes(lzma.compress("\n".join(stanzas).encode()))
    pool = root / "pool/main/l/linux"
    pool.mkdir(parents=True)
    (pool / "linux-image-6.1.0-10-amd64_6.1.10-1_amd64.deb").write_bytes(DEB_V1)
    (pool / "linux-image-6.1.0-9-amd64_6.1.9-1_amd64.deb").write_bytes(DEB_V2)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror_root(tmp_path: Path) -> Path:
    return tmp_path / "mirror"


@pytest.fixture
def mirror(mirror_root: Path) -> Iterator[str]:
    mirror_root.mkdir()
    handler = partial(QuietHandler, directory=str(mirror_root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/debian/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_mirror_resolves_the_newest_metapackage(mirror: str, mirror_root: Path) -> None:
    (mirror_root / "debian").mkdir()
    write_mirror(mirror_root / "debian")
    pkg = resolve_from_mirror(mirror, None)
    assert (pkg.package, pkg.version) == ("linux-image-6.1.0-10-amd64", "6.1.10-1")
    older = resolve_from_mirror(mirror, "6.1.9-1")
    assert older.package == "linux-image-6.1.0-9-amd64"
    with pytest.raises(InvalidArgument, match=r"^source: "):
        resolve_from_mirror(mirror, "7.0-1")


def test_mirror_download_is_verified_cached_and_reused(
    mirror: str, mirror_root: Path, tmp_path: Path
) -> None:
    (mirror_root / "debian").mkdir()
    write_mirror(mirror_root / "debian")
    cache = tmp_path / "cache"
    stages: list[str] = []
    pkg, path = fetch_kernel_deb(
        None, cache_dir=cache, mirror=mirror, progress=lambda s, d, t: stages.append(s)
    )
    assert path == cached_deb_path(cache, pkg)
    assert path.read_bytes() == DEB_V1
    assert {"resolve", "download", "verify"} <= set(stages)
    # Served again from the cache: remove it from the mirror to prove it.
    for deb in (mirror_root / "debian/pool").rglob("*.deb"):
        deb.unlink()
    assert fetch_kernel_deb(None, cache_dir=cache, mirror=mirror)[1] == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no leftovers


def test_mirror_checksum_mismatch_is_refused_and_not_cached(
    mirror: str, mirror_root: Path, tmp_path: Path
) -> None:
    (mirror_root / "debian").mkdir()
    write_mirror(mirror_root / "debian", v2_sha="ab" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(BangerError, match="does not match the archive"):
        fetch_kernel_deb("6.1.9-1", cache_dir=cache, mirror=mirror)
    assert not list((cache / "debs").rglob("*.deb"))
    assert not list((cache / "debs").rglob(".download-*"))


def test_mirror_without_index_is_a_clear_error(mirror: str) -> None:
    with pytest.raises(BangerError, match=r"kernel\.debian_mirror: .* answered HTTP 404"):
        resolve_from_mirror(mirror, None)
