"""First use: `vm run` on a home with no kernel pulls the default one through bangerd, then boots.

The other half of first use — the default image built through the root
helper's ``image_build`` op — is what :mod:`tests.image_cache` does to make
the image every guest test boots (``banger image build`` as an unprivileged
owner), so it is proven once per cache key without a second mmdebstrap here.

The namespace has no uplink, so the owner's download cache is seeded with the
kernel package the test cache already holds (the same file ``apt-get
download`` would fetch; apt resolves it offline from the host's package
lists): everything else — resolving ``vm.kernel = "debian"``, the pull
operation, extraction, the initramfs, publication, the boot — is the real
daemon path.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest

from banger.kernels.debian import cached_deb_path, resolve_with_apt
from tests.e2e.harness import IMAGE_NAME, Banger, banger_env
from tests.image_cache import CACHE_ROOT, cached_debian_image
from tests.kernel_cache import cached_debian_kernel
from tests.support import needs_root

pytestmark = [pytest.mark.root, pytest.mark.guest, pytest.mark.slow, needs_root]


def seed_download_cache(b: Banger) -> str:
    """Put the kernel .deb where the owner's daemon looks first; returns its Debian version."""
    pkg = resolve_with_apt(None)
    cached_debian_kernel()  # makes sure CACHE_ROOT/debs holds the package
    source = cached_deb_path(CACHE_ROOT, pkg)
    cache_dir = b.home / "cache"
    dest = cached_deb_path(cache_dir, pkg)
    dest.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(source, dest)
    for path in (cache_dir, dest.parent.parent, dest.parent, dest):
        os.chown(path, b.user.uid, b.user.gid)
    return pkg.version


@pytest.fixture(scope="module")
def b() -> Iterator[Banger]:
    image = cached_debian_image()
    with banger_env(seed=False) as env:
        # Named like the default `vm.image = "debian:bookworm"` resolves, not marked default.
        env.banger("image", "register", str(image), "--name", IMAGE_NAME)
        yield env


def kernels(b: Banger) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(b.banger("kernel", "list", "--json").stdout)
    return listed


def test_first_vm_run_pulls_the_default_kernel_and_boots(b: Banger) -> None:
    version = seed_download_cache(b)
    assert kernels(b) == []

    result = b.banger("vm", "run", "--init", "fast", "--rm", "--", "uname", "-r")

    [kernel] = kernels(b)
    assert kernel["source"] == f"debian:{version}"
    assert result.stdout.strip() == kernel["version"], result.stdout
    # The wait is explained, then shown as its own stage with progress.
    assert "note: kernel debian is not here yet: pulling it" in result.stderr
    assert "▸ pull_kernel" in result.stderr and "extract: 100%" in result.stderr
    assert json.loads(b.banger("vm", "list", "--json").stdout) == []


def test_the_next_vm_reuses_the_pulled_kernel(b: Banger) -> None:
    if not kernels(b):
        pytest.skip("needs the kernel the first test pulled")
    created = b.banger("vm", "create", "--name", "again", "--init", "fast")
    try:
        assert "not here yet" not in created.stderr
        shown = json.loads(b.banger("vm", "show", "again", "--json").stdout)
        [kernel] = kernels(b)
        assert shown["kernel_name"] == kernel["name"], shown
        assert shown["image_name"] == IMAGE_NAME, shown
    finally:
        b.banger("vm", "rm", "--force", "again", check=False)
