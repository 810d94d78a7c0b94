"""The two ways a kernel entry comes to be: ``pull`` and ``import``.

These are what the daemon's KernelService calls (in a worker thread: they
block on downloads, decompression and hashing).
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from banger.errors import InvalidArgument
from banger.kernels.binfmt import bzimage_version
from banger.kernels.deb import extract_kernel_deb, run_depmod
from banger.kernels.debian import DEFAULT_SUITE, fetch_kernel_deb
from banger.kernels.initramfs import build_initramfs, builder_fingerprint
from banger.kernels.store import KernelEntry, check_kernel_name, kernel_file_name, publish_kernel
from banger.paths import Paths
from banger.rmtree import discard_tree

Progress = Callable[[str, int | None, int | None], None]

#: A Debian version: [epoch:]upstream[-revision], dpkg's alphabet.
_DEBIAN_VERSION = re.compile(r"^[0-9][A-Za-z0-9.+~:-]*$")
SOURCE_HINT = "use `debian` (the current kernel) or `debian:<version>`, e.g. debian:6.1.192-2"


def _no_progress(stage: str, done: int | None, total: int | None) -> None:
    pass


def parse_source(source: str) -> str | None:
    """``debian`` -> None (newest), ``debian:<version>`` -> the version."""
    kind, sep, version = source.partition(":")
    if kind != "debian":
        raise InvalidArgument(f"source: unknown kernel source {source!r}", hint=SOURCE_HINT)
    if not sep:
        return None
    if not _DEBIAN_VERSION.fullmatch(version):
        raise InvalidArgument(f"source: {version!r} is not a Debian version", hint=SOURCE_HINT)
    return version


def _workdir(paths: Paths, kind: str) -> Path:
    paths.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    work = paths.tmp_dir / f"{kind}-{secrets.token_hex(4)}.partial"
    work.mkdir(mode=0o700)
    return work


def pull_kernel(
    source: str,
    *,
    paths: Paths,
    mirror: str | None = None,
    progress: Progress | None = None,
    name: str | None = None,
    keep_modules: bool = True,
    suite: str = DEFAULT_SUITE,
    apt_options: Sequence[str] = (),
) -> KernelEntry:
    """Fetch Debian's kernel package, build banger's initramfs for it, publish the entry.

    ``mirror`` is ``kernel.debian_mirror`` from the config (None: the host's
    apt). ``keep_modules`` keeps the whole ``lib/modules/<release>`` tree in
    the entry (about 400 MB) for guests that want more modules later.
    """
    version = parse_source(source)
    if name is not None:
        check_kernel_name(name)
    report = progress or _no_progress
    pkg, deb = fetch_kernel_deb(
        version,
        cache_dir=paths.cache_dir,
        mirror=mirror,
        suite=suite,
        progress=report,
        apt_options=apt_options,
    )
    work = _workdir(paths, "pull")
    try:
        report("extract", 0, None)
        kernel = extract_kernel_deb(deb, work / "root", report)
        report("depmod", None, None)
        run_depmod(kernel.root, kernel.version)
        report("initramfs", None, None)
        initramfs = build_initramfs(kernel.modules_dir, work / "initrd.img")
        report("publish", None, None)
        return publish_kernel(
            paths.kernels_dir,
            paths.tmp_dir,
            name or f"debian-{pkg.version}",
            kernel.vmlinuz,
            initramfs.path,
            kernel.modules_dir if keep_modules else None,
            {
                "source": f"debian:{pkg.version}",
                "version": kernel.version,
                "package": pkg.package,
                "package_version": pkg.version,
                "package_sha256": pkg.sha256,
                "initramfs_modules": list(initramfs.modules),
                "initramfs_builder": builder_fingerprint(),
            },
        )
    finally:
        discard_tree(work)


def _modules_tree(modules: Path, work: Path) -> Path:
    """A ``lib/modules/<release>`` tree with ``modules.dep``: as given, or a depmod'ed copy."""
    if not modules.is_dir() or not (modules / "kernel").is_dir():
        raise InvalidArgument(
            f"modules: {modules} is not a lib/modules/<release> directory",
            hint="pass e.g. /lib/modules/6.1.0-56-amd64 (it has a kernel/ subdirectory)",
        )
    if (modules / "modules.dep").is_file():
        return modules
    copy = work / "lib" / "modules" / modules.name
    shutil.copytree(modules, copy, symlinks=True)
    run_depmod(work, modules.name)
    return copy


def import_kernel(
    path: Path,
    *,
    paths: Paths,
    initrd: Path | None = None,
    modules: Path | None = None,
    name: str | None = None,
    busybox: Path | None = None,
) -> KernelEntry:
    """Publish a local kernel image, with a given initramfs or one built from ``modules``."""
    if not path.is_file():
        raise InvalidArgument(f"path: {path} is not a file")
    kernel_file_name(path)  # refuses anything that is not a bzImage or ELF image
    if initrd is not None and modules is not None:
        raise InvalidArgument(
            "initrd: give either an initramfs or modules to build one from, not both"
        )
    if initrd is not None and not initrd.is_file():
        raise InvalidArgument(f"initrd: {initrd} is not a file")
    version = bzimage_version(path) or (modules.name if modules is not None else None)
    if name is not None:
        check_kernel_name(name)
    else:
        name = check_kernel_name(re.sub(r"[^A-Za-z0-9._+-]", "-", version or path.name))
    work = _workdir(paths, "import")
    try:
        meta: dict[str, object] = {"source": f"import:{path.absolute()}", "version": version}
        if modules is not None:
            built = build_initramfs(
                _modules_tree(modules, work), work / "initrd.img", busybox=busybox
            )
            initrd = built.path
            meta["initramfs_modules"] = list(built.modules)
            meta["initramfs_builder"] = builder_fingerprint()
        return publish_kernel(paths.kernels_dir, paths.tmp_dir, name, path, initrd, None, meta)
    finally:
        discard_tree(work)
