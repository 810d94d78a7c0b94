"""OCI pulls against a real local registry (docker-registry on loopback) with skopeo.

Images are built here as OCI layouts (tests/registry.py), pushed with skopeo,
then pulled back through banger's cache, flattened, finalized and published.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.images.finalize import ImageNotBootable
from banger.images.oci.budget import ImageTooLarge
from banger.images.oci.flatten import HostileLayer, flatten_layers
from banger.images.oci.layers import FetchedImage
from banger.images.oci.pull import pull_image, pull_oci
from banger.images.publish import list_images
from banger.paths import Paths
from tests.registry import (
    BOOT_FILES,
    CAP_NET_RAW_EP,
    CONFIG,
    LAYER_ZSTD,
    LOWER,
    UPPER,
    LocalRegistry,
    build,
    file,
    local_registry,
    symlink,
)
from tests.support import needs_root

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with local_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def check_tree(root: Path) -> None:
    """What every pulled copy of the LOWER+UPPER image must look like."""
    assert (root / "etc/keep").read_bytes() == b"keep"
    assert not os.path.lexists(root / "etc/deleted")
    assert sorted(p.name for p in (root / "srv/data").iterdir()) == ["upper"]
    passwd = (root / "usr/bin/passwd").stat()
    assert (stat.S_IMODE(passwd.st_mode), passwd.st_uid) == (0o4755, 0)
    assert os.getxattr(root / "usr/bin/ping", "security.capability") == CAP_NET_RAW_EP
    notes = (root / "home/dev/notes").stat()
    assert (notes.st_uid, notes.st_gid, stat.S_IMODE(notes.st_mode)) == (1000, 1000, 0o640)
    big, link = (root / "usr/lib/libbig.so").stat(), (root / "usr/lib/libbig-link.so").stat()
    assert big.st_ino == link.st_ino and big.st_nlink == 2
    assert os.readlink(root / "lib64") == "usr/lib"


def test_pull_then_flatten_keeps_oci_semantics(short_tmp: Path, registry: LocalRegistry) -> None:
    image = build(short_tmp, [LOWER, UPPER])
    ref = registry.push(image, "test/features")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    fetched = pull_oci(ref, paths=paths)
    assert fetched.source_digest == image.manifest_digest
    assert fetched.config.env == tuple(CONFIG["Env"])
    assert (fetched.config.working_dir, fetched.config.user) == ("/srv", "dev")
    flatten_layers(fetched.layers(), short_tmp / "tree")
    check_tree(short_tmp / "tree")


def test_concurrent_pulls_of_one_ref_download_each_blob_once(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    image = build(short_tmp, [LOWER, UPPER, [file("etc/third", os.urandom(1 << 20))]],
                  media_type=LAYER_ZSTD)  # fmt: skip
    ref = registry.push(image, "test/concurrent")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    results: list[FetchedImage] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(pull_oci(ref, paths=paths))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [registry.blob_gets(d) for d in image.layer_digests] == [1, 1, 1]
    # One pull wrote the layers + config (+ manifest); the others found them cached.
    assert sorted(r.new_blobs for r in results)[:3] == [0, 0, 0]
    assert {r.manifest_digest for r in results} == {image.manifest_digest}
    # A later pull downloads nothing either.
    assert pull_oci(ref, paths=paths).new_blobs == 0
    assert [registry.blob_gets(d) for d in image.layer_digests] == [1, 1, 1]


def test_pull_image_publishes_a_finalized_image(short_tmp: Path, registry: LocalRegistry) -> None:
    image = build(short_tmp, [BOOT_FILES, LOWER, UPPER])
    ref = registry.push(image, "test/bootable", "v1")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    lines: list[str] = []
    entry = pull_image(ref, paths=paths, progress=lines.append)
    assert entry.name == "test-bootable-v1"
    assert entry.source == f"{ref}@{image.manifest_digest}"
    assert "User=dev" in entry.description and "WorkingDir=/srv" in entry.description
    assert "APP_MODE=test" in entry.description
    assert [e.name for e in list_images(paths.images_dir)] == ["test-bootable-v1"]
    assert list(paths.tmp_dir.iterdir()) == []
    mnt = short_tmp / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(entry.rootfs), str(mnt)], check=True)
    try:
        check_tree(mnt)
        assert (mnt / "etc/ssh/sshd_config.d/10-banger.conf").is_file()
        assert not (mnt / "etc/ssh/ssh_host_ed25519_key").exists()
        assert list((mnt / "root").iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_image_without_sshd_or_package_manager_is_refused_cleanly(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    image = build(short_tmp, [LOWER, [file("bin/sh", b"#!fake\n", 0o755)]])
    ref = registry.push(image, "test/bare")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    with pytest.raises(ImageNotBootable) as err:
        pull_image(ref, paths=paths, name="bare")
    assert "systemd, sshd, tmux" in str(err.value)
    assert err.value.hint and "RUN apt-get update && apt-get install" in err.value.hint
    assert "openssh-server" in err.value.hint
    assert list_images(paths.images_dir) == []
    assert list(paths.tmp_dir.iterdir()) == []


def test_hostile_image_from_the_registry_is_refused(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    sentinel = short_tmp / "sentinel"
    sentinel.mkdir()
    image = build(short_tmp, [BOOT_FILES, [symlink("etc/evil", str(sentinel))],
                              [file("etc/evil/pwned", b"x")]])  # fmt: skip
    ref = registry.push(image, "test/hostile")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    with pytest.raises(HostileLayer, match=image.layer_digests[2]):
        pull_image(ref, paths=paths, name="hostile")
    assert list(sentinel.iterdir()) == []
    assert list_images(paths.images_dir) == []
    assert list(paths.tmp_dir.iterdir()) == []


def test_pull_from_an_oci_archive(short_tmp: Path) -> None:
    image = build(short_tmp, [LOWER, UPPER])
    archive = short_tmp / "img.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{image.layout}:{image.tag}",
                    f"oci-archive:{archive}"], check=True)  # fmt: skip
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    fetched = pull_oci(f"oci-archive:{archive}", paths=paths)
    assert fetched.source_digest is None and fetched.new_blobs >= 3
    assert pull_oci(f"oci-archive:{archive}", paths=paths).new_blobs == 0
    flatten_layers(fetched.layers(), short_tmp / "tree")
    check_tree(short_tmp / "tree")


def test_a_zero_bomb_from_the_registry_is_refused_and_leaves_nothing(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    """Issue #22 item 4: 32 MiB of zeros (a few hundred bytes of gzip) over an 8 MiB cap."""
    image = build(short_tmp, [BOOT_FILES, [file("var/bomb", bytes(32 << 20))]])
    ref = registry.push(image, "test/bomb")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    with pytest.raises(ImageTooLarge) as err:
        pull_image(ref, paths=paths, name="bomb", max_unpacked=8 << 20)
    assert str(err.value).startswith(f"layer {image.layer_digests[1]} is refused: entry 'var/bomb'")
    assert err.value.exit_code == 2
    assert list_images(paths.images_dir) == []
    assert list(paths.tmp_dir.iterdir()) == []


def test_a_name_too_long_from_the_registry_names_layer_and_path(
    short_tmp: Path, registry: LocalRegistry
) -> None:
    """Issue #22 item 4: not a raw ``OSError: File name too long``."""
    image = build(short_tmp, [BOOT_FILES, [file("etc/" + "x" * 256, b"x")]])
    ref = registry.push(image, "test/longname")
    paths = Paths.from_env({"BANGER_HOME": str(short_tmp / "home")})
    with pytest.raises(HostileLayer) as err:
        pull_image(ref, paths=paths, name="longname")
    assert str(err.value).startswith(f"layer {image.layer_digests[1]} is refused: entry 'etc/xxx")
    assert "over 255 bytes" in str(err.value)
    assert list(paths.tmp_dir.iterdir()) == []
