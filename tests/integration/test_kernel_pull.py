"""The real Debian kernel: fetched through the host's apt, extracted, initramfs built, published."""

from __future__ import annotations

import json
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from banger.kernels import KernelEntry, import_kernel, pull_kernel, verify_kernel
from banger.kernels.debian import fetch_kernel_deb, resolve_with_apt
from banger.kernels.initramfs import build_initramfs
from banger.kernels.modules import load_index, resolve_modules
from banger.kernels.store import sha256_file
from banger.paths import Paths
from tests.kernel_cache import CACHE_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("apt-get") is None, reason="host has no apt"),
]

#: guest-boot.md §1 step 5: the measured module list, in load order.
RECIPE_MODULES = [
    "virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "failover", "net_failover",
    "virtio_net", "crc32c_generic", "crc32c-intel", "crc16", "mbcache", "jbd2", "ext4",
    "virtio-rng",
]  # fmt: skip
#: ...plus what lets QMP system_powerdown reach systemd-logind (ACPI button, evdev),
#: virtio_console for the guest agent's virtio-serial port, and the virtio vsock
#: transport (after its dependencies) for the agent over vsock on Firecracker.
EXPECTED_MODULES = [
    *RECIPE_MODULES, "button", "evdev", "virtio_console",
    "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
]  # fmt: skip


Pulled = tuple[Paths, KernelEntry, list[str]]


def paths_in(root: Path, cache_dir: Path) -> Paths:
    return Paths(root / "config", root / "state", cache_dir, root / "run")


def cpio_names(tool: list[str], initrd: Path) -> list[str]:
    data = zlib.decompress(initrd.read_bytes(), wbits=31)
    out = subprocess.run([*tool, "-t"], input=data, capture_output=True, check=True).stdout
    return out.decode().split()


def test_apt_download_is_verified_and_reports_progress(tmp_path: Path) -> None:
    stages: list[tuple[str, int | None, int | None]] = []
    pkg, deb = fetch_kernel_deb(None, cache_dir=tmp_path, progress=lambda *a: stages.append(a))
    assert deb == tmp_path / "debs" / pkg.sha256 / pkg.deb_name
    assert sha256_file(deb) == pkg.sha256 == resolve_with_apt(None).sha256
    assert deb.stat().st_size == pkg.size
    assert stages[0][0] == "resolve"
    assert "verify" in [s for s, _, _ in stages]
    assert list(deb.parent.iterdir()) == [deb]  # the download dir is gone


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pulled]:
    root = tmp_path_factory.mktemp("pull")
    # The .deb cache is shared with tests/kernel_cache.py: no second download.
    paths = paths_in(root, CACHE_ROOT)
    stages: list[str] = []
    entry = pull_kernel("debian", paths=paths, progress=lambda s, d, t: stages.append(s))
    yield paths, entry, stages
    shutil.rmtree(root)  # the modules tree is 400 MB: do not leave it to pytest's retention


def test_pull_publishes_kernel_initramfs_and_modules(
    pulled: Pulled,
) -> None:
    paths, entry, stages = pulled
    pkg = resolve_with_apt(None)
    assert entry.name == f"debian-{pkg.version}"
    assert entry.source == f"debian:{pkg.version}"
    assert entry.version is not None and entry.version in pkg.package
    assert entry.kernel == "vmlinuz" and entry.initrd == "initrd.img"
    assert entry.modules_path is not None
    assert (entry.modules_path / entry.version / "modules.dep").is_file()
    assert (entry.modules_path / entry.version / "kernel/fs/ext4/ext4.ko").is_file()
    data = json.loads((entry.path / "kernel.json").read_text())
    assert data["package"] == pkg.package and data["package_sha256"] == pkg.sha256
    assert data["initramfs_modules"] == EXPECTED_MODULES
    verify_kernel(entry)
    assert list(paths.tmp_dir.iterdir()) == []  # no build leftovers
    for stage in ("resolve", "download", "extract", "depmod", "initramfs", "publish"):
        assert stage in stages


def test_module_resolution_on_the_real_kernel_matches_the_recipe(
    pulled: Pulled,
) -> None:
    _, entry, _ = pulled
    assert entry.modules_path and entry.version
    index = load_index(entry.modules_path / entry.version)
    assert [m.stem for m in resolve_modules(index)] == EXPECTED_MODULES


@pytest.mark.parametrize(
    "tool", [["cpio", "--quiet"], ["busybox", "cpio"]], ids=["cpio", "busybox"]
)
def test_initramfs_holds_exactly_the_expected_files(pulled: Pulled, tool: list[str]) -> None:
    _, entry, _ = pulled
    assert entry.initrd_path
    names = cpio_names(tool, entry.initrd_path)
    modules = [
        n.removeprefix("lib/modules/").removesuffix(".ko") for n in names if n.endswith(".ko")
    ]
    assert modules == EXPECTED_MODULES
    assert set(names) - {f"lib/modules/{m}.ko" for m in modules} == {
        "bin", "bin/busybox", "dev", "dev/console", "etc", "init", "lib", "lib/modules",
        "lib/modules/load-order", "newroot", "proc", "sys",
    }  # fmt: skip


def test_initramfs_is_reproducible(pulled: Pulled, tmp_path: Path) -> None:
    paths, entry, _ = pulled
    assert entry.initrd_path and entry.modules_path
    moddir = entry.modules_path / str(entry.version)
    first = build_initramfs(moddir, tmp_path / "a.img")
    second = build_initramfs(moddir, tmp_path / "b.img")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == sha256_file(entry.initrd_path)
    # import builds the same initramfs from the same modules
    imported = import_kernel(entry.kernel_path, paths=paths, modules=moddir, name="imported")
    assert imported.initrd_path is not None
    assert sha256_file(imported.initrd_path) == first.sha256
    assert imported.version == entry.version
