"""banger's own initramfs: static busybox, the needed modules, and ``/init``.

The archive is built in memory by :mod:`banger.kernels.cpio` and gzipped with a
fixed mtime, so the same kernel modules, busybox and init script always give
the same bytes (cacheable, and comparable in tests). Layout::

    /init                       init.sh from this package
    /bin/busybox                the host's busybox-static (applets installed at boot)
    /dev/console                so the kernel can give /init a console
    /lib/modules/<stem>.ko      flat, uncompressed
    /lib/modules/load-order     one stem per line, dependencies first
    /newroot /proc /sys /etc
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from banger import proc
from banger.errors import BangerError
from banger.kernels.binfmt import elf_is_static, is_elf
from banger.kernels.cpio import CpioEntry, write_newc
from banger.kernels.modules import (
    OPTIONAL_MODULES,
    REQUIRED_MODULES,
    Module,
    load_index,
    resolve_modules,
)

#: Where Debian's busybox-static puts its binary; PATH is searched after it.
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
INIT_SCRIPT = "init.sh"
#: The sources whose change must change the initramfs (see builder_fingerprint).
_BUILDER_SOURCES = ("initramfs.py", "cpio.py", "modules.py", INIT_SCRIPT)


@dataclass(frozen=True)
class Initramfs:
    path: Path
    modules: tuple[str, ...]  # file stems in load order: crc32c-intel, ext4, ...
    sha256: str
    size: int


def init_script() -> bytes:
    return resources.files("banger.kernels").joinpath(INIT_SCRIPT).read_bytes()


def builder_fingerprint() -> str:
    """A hash of the code that decides the initramfs bytes, for cache keys."""
    digest = hashlib.sha256()
    pkg = resources.files("banger.kernels")
    for name in _BUILDER_SOURCES:
        digest.update(name.encode() + b"\0" + pkg.joinpath(name).read_bytes())
    return digest.hexdigest()


def find_busybox(explicit: Path | None = None) -> Path:
    """A statically linked busybox: the initramfs has no libc or loader for it."""
    if explicit is not None:
        candidates: list[Path] = [explicit]
    else:
        candidates = [p for p in BUSYBOX_CANDIDATES if p.is_file()]
        on_path = proc.which("busybox")  # the system directories too, whatever PATH says
        if on_path:
            candidates.append(Path(on_path))
    hint = "install busybox-static (`sudo apt-get install busybox-static`)"
    if not candidates:
        raise BangerError("busybox not found", hint=hint)
    for path in candidates:
        if path.is_file() and is_elf(path) and elf_is_static(path):
            return path.resolve()
    raise BangerError(f"busybox at {candidates[0]} is not a static executable", hint=hint)


def read_module(path: Path) -> bytes:
    """A module's bytes, decompressed: busybox insmod does not read .ko.xz/.ko.zst."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        import zstandard

        out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return out
    return data


def initramfs_entries(
    modules: list[tuple[str, bytes]], busybox: bytes, init: bytes
) -> list[CpioEntry]:
    """The archive's members, parents first. ``modules`` are (stem, bytes) in load order."""
    entries = [
        CpioEntry.directory("bin"),
        CpioEntry.file("bin/busybox", busybox, 0o755),
        CpioEntry.directory("dev"),
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.directory("etc"),
        CpioEntry.file("init", init, 0o755),
        CpioEntry.directory("lib"),
        CpioEntry.directory("lib/modules"),
    ]
    entries += [CpioEntry.file(f"lib/modules/{stem}.ko", data) for stem, data in modules]
    order = "".join(f"{stem}\n" for stem, _ in modules).encode()
    entries.append(CpioEntry.file("lib/modules/load-order", order))
    entries += [CpioEntry.directory(d) for d in ("newroot", "proc", "sys")]
    return entries


def build_initramfs(
    moddir: Path | None,
    out: Path,
    *,
    busybox: Path | None = None,
    required: tuple[str, ...] = REQUIRED_MODULES,
    optional: tuple[str, ...] = OPTIONAL_MODULES,
) -> Initramfs:
    """Write a gzipped newc initramfs to ``out``.

    ``moddir`` is a ``lib/modules/<version>`` directory with ``modules.dep``;
    None builds one without modules (for a kernel with everything built in).
    """
    chosen: list[Module] = []
    if moddir is not None:
        chosen = resolve_modules(load_index(moddir), required, optional)
        modules = [(m.stem, read_module(moddir / m.path)) for m in chosen]
    else:
        modules = []
    archive = write_newc(
        initramfs_entries(modules, find_busybox(busybox).read_bytes(), init_script())
    )
    packed = gzip.compress(archive, compresslevel=9, mtime=0)
    out.write_bytes(packed)
    return Initramfs(
        path=out,
        modules=tuple(m.stem for m in chosen),
        sha256=hashlib.sha256(packed).hexdigest(),
        size=len(packed),
    )
