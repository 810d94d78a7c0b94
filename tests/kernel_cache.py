"""A pulled Debian kernel + banger initramfs, built once and shared by tests.

``cached_debian_kernel()`` returns a directory with ``vmlinuz``, ``vmlinux``,
``initrd.img`` and ``kernel.json`` under ``/var/cache/banger-test/``, keyed by
the Debian package apt resolves to now and by a hash of every source of
``banger.kernels`` (init script included): reruns reuse it, a change to any of
them rebuilds it. The ``.deb`` itself is cached in ``/var/cache/banger-test/debs``
so a rebuild does not download again. A file lock makes concurrent test
processes wait for one builder.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from banger.kernels import pull_kernel
from banger.kernels.debian import resolve_with_apt
from banger.kernels.initramfs import builder_fingerprint
from banger.paths import Paths
from tests.support import package_sources

CACHE_ROOT = Path(os.environ.get("BANGER_TEST_CACHE", "/var/cache/banger-test"))


def kernel_cache_key() -> str:
    pkg = resolve_with_apt(None)
    material = f"{pkg.package}={pkg.version}:{pkg.sha256}:{builder_fingerprint()}"
    digest = hashlib.sha256(material.encode())
    # builder_fingerprint covers the initramfs alone; the cached directory is also
    # what the .deb extraction, depmod, vmlinux handling and kernel.json writing
    # made. So every source of banger.kernels is keyed (a rule, not a list that
    # goes stale): a change there rebuilds instead of being hidden by a warm cache.
    for label, data in package_sources("banger.kernels"):
        digest.update(f"--- {label}\n".encode() + data)
    return digest.hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cached_debian_kernel() -> Path:
    """The cached kernel directory, built with the real ``pull_kernel`` if missing."""
    target = CACHE_ROOT / f"kernel-{kernel_cache_key()}"
    if (target / "kernel.json").is_file():
        return target
    with _locked(CACHE_ROOT / "kernel.lock"):
        if (target / "kernel.json").is_file():  # another process built it meanwhile
            return target
        work = Path(tempfile.mkdtemp(prefix="kernel-build-", dir=CACHE_ROOT))
        try:
            paths = Paths(
                config_dir=work / "config",
                state_dir=work / "state",
                cache_dir=CACHE_ROOT,  # debs/ shared across rebuilds
                runtime_dir=work / "run",
            )
            entry = pull_kernel("debian", paths=paths, keep_modules=False)
            staging = work / "out"
            staging.mkdir()
            shutil.copyfile(entry.kernel_path, staging / "vmlinuz")
            # The extracted ELF: QEMU boots it through its PVH entry, Firecracker as it is.
            assert entry.vmlinux_path is not None
            shutil.copyfile(entry.vmlinux_path, staging / "vmlinux")
            assert entry.initrd_path is not None
            shutil.copyfile(entry.initrd_path, staging / "initrd.img")
            shutil.copyfile(entry.path / "kernel.json", staging / "kernel.json")
            staging.rename(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target
