"""Extracting a kernel from a Debian package, in Python and safely.

A ``.deb`` is an ``ar`` archive whose ``data.tar.{xz,zst,gz}`` member holds the
files. Only what a kernel entry needs is written: ``boot/vmlinuz-*``,
``boot/config-*``, ``boot/System.map-*`` and ``lib/modules/<version>/**``
(``usr/lib/modules`` in merged-/usr packages is mapped to ``lib/modules``),
and only regular files and directories, never links or devices. Any member
whose name is absolute or climbs out with ``..`` makes the whole archive
rejected, whether or not we wanted that member: such a package is not one to
trust for the rest either.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, cast

from banger import proc
from banger.errors import BangerError

Progress = Callable[[str, int | None, int | None], None]

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60
PROGRESS_STEP = 1 << 20
STREAM_MODES: dict[str, Literal["r|", "r|gz", "r|bz2", "r|xz"]] = {
    "data.tar": "r|",
    "data.tar.gz": "r|gz",
    "data.tar.bz2": "r|bz2",
    "data.tar.xz": "r|xz",
    "data.tar.zst": "r|",  # decompressed by zstandard first
}


class UnsafeArchive(BangerError):
    """An archive member would land outside the extraction directory."""


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ExtractedKernel:
    root: Path  # the extraction directory (boot/, lib/modules/<version>/)
    version: str  # 6.1.0-56-amd64
    vmlinuz: Path
    config: Path | None
    system_map: Path | None

    @property
    def modules_dir(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def ar_members(f: BinaryIO) -> list[ArMember]:
    """The members of an ``ar`` archive (the format ``dpkg-deb`` writes)."""
    f.seek(0)
    if f.read(len(AR_MAGIC)) != AR_MAGIC:
        raise BangerError("not a Debian package (no ar archive header)")
    members: list[ArMember] = []
    while True:
        header = f.read(AR_HEADER_SIZE)
        if not header:
            return members
        if len(header) != AR_HEADER_SIZE or header[58:60] != b"`\n":
            raise BangerError("corrupt Debian package (bad ar member header)")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members.append(ArMember(name, f.tell(), size))
        f.seek(size + size % 2, os.SEEK_CUR)  # members are 2-byte aligned


class _Window:
    """A read-only view of ``size`` bytes of a file, counting what was read."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        self._f = f
        self._left = size
        self.consumed = 0
        f.seek(offset)

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        data = self._f.read(n)
        self._left -= len(data)
        self.consumed += len(data)
        return data


@contextmanager
def _data_tar(deb: Path) -> Iterator[tuple[tarfile.TarFile, _Window, int]]:
    with open(deb, "rb") as f:
        members = {m.name: m for m in ar_members(f)}
        data = next((m for n, m in members.items() if n.startswith("data.tar")), None)
        if data is None:
            raise BangerError(f"{deb.name}: no data.tar member in the package")
        mode = STREAM_MODES.get(data.name)
        if mode is None:
            raise BangerError(f"{deb.name}: unsupported member {data.name}")
        window = _Window(f, data.offset, data.size)
        # tarfile's stream mode only ever calls read(); the stubs want a real file.
        fileobj: Any = window
        if data.name.endswith(".zst"):
            import zstandard

            fileobj = zstandard.ZstdDecompressor().stream_reader(cast(Any, window))
        with tarfile.open(fileobj=fileobj, mode=mode) as tar:
            yield tar, window, data.size


def safe_member_path(name: str) -> PurePosixPath:
    """The member's relative path, or :class:`UnsafeArchive` if it would escape."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafeArchive(
            f"unsafe path in archive: {name!r}", hint="the package is corrupt or malicious"
        )
    return PurePosixPath(*[p for p in path.parts if p != "."])


def _wanted(rel: PurePosixPath) -> PurePosixPath | None:
    """Where a member goes in the extraction directory, or None to skip it."""
    parts = rel.parts
    if parts[:2] == ("usr", "lib"):
        parts = parts[1:]
        rel = PurePosixPath(*parts)
    if len(parts) == 2 and parts[0] == "boot":
        if parts[1].startswith(("vmlinuz-", "config-", "System.map-")):
            return rel
        return None
    if len(parts) >= 3 and parts[:2] == ("lib", "modules"):
        return rel
    return None


def extract_tar(tar: tarfile.TarFile, dest: Path, on_member: Callable[[], None]) -> None:
    """Write the wanted regular files and directories of ``tar`` under ``dest``."""
    for member in tar:
        rel = safe_member_path(member.name)
        on_member()
        if not rel.parts:
            continue
        target_rel = _wanted(rel)
        if target_rel is None or not (member.isfile() or member.isdir()):
            continue
        target = dest.joinpath(*target_rel.parts)
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(member)
        assert src is not None  # a regular file always has data
        # O_EXCL|O_NOFOLLOW: we never follow or overwrite anything while writing.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)


def extract_kernel_deb(deb: Path, dest: Path, progress: Progress | None = None) -> ExtractedKernel:
    """Extract the kernel, its config and modules from ``deb`` into ``dest`` (created)."""
    dest.mkdir(parents=True, exist_ok=False)
    with _data_tar(deb) as (tar, window, total):
        last = 0

        def on_member() -> None:
            nonlocal last
            if progress and window.consumed - last >= PROGRESS_STEP:
                last = window.consumed
                progress("extract", window.consumed, total)

        extract_tar(tar, dest, on_member)
        if progress:
            progress("extract", total, total)
    return find_kernel(dest, deb.name)


def find_kernel(root: Path, what: str) -> ExtractedKernel:
    modules = root / "lib" / "modules"
    versions = sorted(p.name for p in modules.iterdir()) if modules.is_dir() else []
    if len(versions) != 1:
        raise BangerError(f"{what}: expected modules for one kernel version, found {versions}")
    version = versions[0]
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.is_file():
        raise BangerError(f"{what}: no boot/vmlinuz-{version} in the package")

    def opt(name: str) -> Path | None:
        path = root / "boot" / f"{name}-{version}"
        return path if path.is_file() else None

    return ExtractedKernel(root, version, vmlinuz, opt("config"), opt("System.map"))


def depmod_binary() -> str:
    """``depmod`` lives in /usr/sbin, which is not on an ordinary user's PATH."""
    found = proc.which("depmod")
    if not found:
        raise BangerError("depmod not found", hint="install kmod (`sudo apt-get install kmod`)")
    return found


def run_depmod(base: Path, version: str) -> None:
    """Generate ``modules.dep`` etc. for ``base/lib/modules/<version>`` (packages ship none)."""
    proc.run([depmod_binary(), "-b", base, version])
