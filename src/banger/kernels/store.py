"""Published kernel entries: ``kernels/<id>/`` with ``kernel.json``.

A kernel directory holds the kernel image (``vmlinuz`` for a bzImage,
``vmlinux`` for an ELF image), an optional ``initrd.img``, an optional
``modules/<release>/`` tree and ``kernel.json`` (name, source, version, the
sha256 of each file, created_at, and free-form metadata such as the Debian
package it came from). It is assembled under the tmp directory (same
filesystem), every file fsynced, then renamed into place in one step: a crash
leaves nothing under ``kernels/`` or a whole entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banger.disk import durable
from banger.errors import BangerError, Conflict, InvalidArgument
from banger.kernels.binfmt import is_bzimage, is_elf
from banger.rmtree import discard_tree

META_NAME = "kernel.json"
INITRD_NAME = "initrd.img"
#: The uncompressed ELF kernel Firecracker boots, extracted from a bzImage at publication.
VMLINUX_NAME = "vmlinux"
MODULES_NAME = "modules"
#: kernel.json key: False for a kernel with every driver its guest needs built in
#: (``banger kernel build``): it boots without an initramfs and never gets one.
NEEDS_INITRAMFS = "needs_initramfs"
META_SCHEMA = 1
#: kernel.json keys banger owns; caller metadata may not override them.
RESERVED_KEYS = frozenset(
    {
        "schema",
        "id",
        "name",
        "source",
        "version",
        "kernel",
        "initrd",
        "modules",
        "sha256",
        "created_at",
    }
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class KernelCorrupt(BangerError):
    """A published kernel's files no longer match the hashes in kernel.json."""


@dataclass(frozen=True)
class KernelEntry:
    id: str
    name: str
    source: str  # "debian:6.1.192-2", "import:/path/to/bzImage"
    version: str | None  # the kernel release, e.g. 6.1.0-56-amd64
    kernel: str  # file name in the directory: vmlinuz | vmlinux
    initrd: str | None
    modules: str | None
    sha256: Mapping[str, str]  # file name -> hex digest
    created_at: str  # ISO 8601, UTC
    path: Path
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kernel_path(self) -> Path:
        return self.path / self.kernel

    @property
    def vmlinux_path(self) -> Path | None:
        """The ELF kernel (the image itself, or the one extracted from it), if the entry has one."""
        if self.kernel == VMLINUX_NAME:
            return self.kernel_path
        return self.path / VMLINUX_NAME if VMLINUX_NAME in self.sha256 else None

    @property
    def initrd_path(self) -> Path | None:
        return self.path / self.initrd if self.initrd else None

    @property
    def needs_initramfs(self) -> bool:
        """Whether the kernel needs banger's initramfs (its drivers are modules); every
        kernel but a ``kernel build`` one does. The start pipeline attaches an
        initramfs only to a kernel that needs one."""
        return self.meta.get(NEEDS_INITRAMFS) is not False

    @property
    def modules_path(self) -> Path | None:
        return self.path / self.modules if self.modules else None

    def to_json(self) -> dict[str, Any]:
        return {
            **self.meta,
            "schema": META_SCHEMA,
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "version": self.version,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "modules": self.modules,
            "sha256": dict(self.sha256),
            "created_at": self.created_at,
        }


def check_kernel_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"name: {name!r} is not a valid kernel name",
            hint="use 1-64 letters, digits, '.', '_', '+' or '-', starting with a letter or digit",
        )
    return name


def kernel_file_name(path: Path) -> str:
    """``vmlinuz`` for a bzImage, ``vmlinux`` for an ELF image; anything else is refused."""
    if is_bzimage(path):
        return "vmlinuz"
    if is_elf(path):
        return "vmlinux"
    raise InvalidArgument(
        f"kernel: {path} is neither a bzImage nor an ELF vmlinux",
        hint="pass the kernel image itself (e.g. /boot/vmlinuz-<version>)",
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_kernel(path: Path) -> KernelEntry:
    try:
        data = json.loads((path / META_NAME).read_text())
        return KernelEntry(
            id=str(data["id"]),
            name=str(data["name"]),
            source=str(data["source"]),
            version=None if data.get("version") is None else str(data["version"]),
            kernel=str(data["kernel"]),
            initrd=None if data.get("initrd") is None else str(data["initrd"]),
            modules=None if data.get("modules") is None else str(data["modules"]),
            sha256={str(k): str(v) for k, v in dict(data["sha256"]).items()},
            created_at=str(data["created_at"]),
            path=path,
            meta={k: v for k, v in data.items() if k not in RESERVED_KEYS},
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BangerError(
            f"kernel directory {path} has no valid {META_NAME}: {exc}",
            hint="remove the directory; `banger kernel pull` or `import` recreates it",
        ) from exc


def list_kernels(kernels_dir: Path) -> list[KernelEntry]:
    if not kernels_dir.is_dir():
        return []
    return [read_kernel(d) for d in sorted(kernels_dir.iterdir()) if (d / META_NAME).is_file()]


def verify_kernel(entry: KernelEntry) -> None:
    """Recompute every recorded sha256; raise :class:`KernelCorrupt` on the first mismatch."""
    for name, expected in entry.sha256.items():
        path = entry.path / name
        actual = sha256_file(path) if path.is_file() else "missing"
        if actual != expected:
            raise KernelCorrupt(
                f"kernel {entry.name}: {name} is {actual}, kernel.json says {expected}",
                hint=f"remove it (banger kernel rm {entry.name}) and pull or import it again",
            )


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    dst.chmod(0o444)  # published files are never written again
    durable.fsync_path(dst)


def _add_vmlinux(staging: Path, kernel_name: str, hashes: dict[str, str]) -> dict[str, Any]:
    """Extract ``vmlinux`` from the bzImage for Firecracker; metadata saying how, or why not.

    A bzImage banger cannot unpack still serves QEMU, so a failure is recorded
    (``vmlinux_error``, shown by ``kernel show``) rather than refusing the kernel.
    """
    from banger.kernels.vmlinux import VmlinuxError, extract_vmlinux

    target = staging / VMLINUX_NAME
    try:
        info = extract_vmlinux(staging / kernel_name, target)
    except VmlinuxError as exc:
        return {"vmlinux_error": exc.message}
    target.chmod(0o444)
    hashes[VMLINUX_NAME] = sha256_file(target)
    return {
        "vmlinux": {
            "compression": info.compression,
            "entry": f"{info.entry:#x}",
            "pvh": info.pvh,
            "size": info.size,
        }
    }


def publish_kernel(
    kernels_dir: Path,
    tmp_dir: Path,
    name: str,
    vmlinuz: Path,
    initrd: Path | None,
    modules_dir: Path | None,
    meta: Mapping[str, Any],
) -> KernelEntry:
    """Publish a kernel entry atomically and return it.

    ``vmlinuz`` and ``initrd`` are copied. ``modules_dir`` (a
    ``lib/modules/<release>`` tree, usually a build directory under
    ``tmp_dir``) is moved to ``modules/<release>`` when it is on the same
    filesystem, copied otherwise. ``meta`` must hold ``source`` and may hold
    ``version``; its other keys are kept in kernel.json as they are.
    Raises :class:`Conflict` if a kernel called ``name`` exists already.
    """
    check_kernel_name(name)
    kernel_name = kernel_file_name(vmlinuz)
    if "source" not in meta:
        raise InvalidArgument("meta: needs a 'source'")
    extra = {k: v for k, v in meta.items() if k not in RESERVED_KEYS}
    if initrd is not None and extra.get(NEEDS_INITRAMFS) is False:
        raise InvalidArgument("initrd: this kernel is marked as needing no initramfs")
    if any(entry.name == name for entry in list_kernels(kernels_dir)):
        raise Conflict(
            f"a kernel named {name!r} exists already",
            hint=f"remove it first (banger kernel rm {name}) or pick another name",
        )
    kernel_id = secrets.token_hex(6)
    kernels_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = tmp_dir / f"kernel-{kernel_id}.partial"
    final = kernels_dir / kernel_id
    staging.mkdir(mode=0o755)
    try:
        _copy(vmlinuz, staging / kernel_name)
        hashes = {kernel_name: sha256_file(staging / kernel_name)}
        if kernel_name != VMLINUX_NAME:
            extra.update(_add_vmlinux(staging, kernel_name, hashes))
        if initrd is not None:
            _copy(initrd, staging / INITRD_NAME)
            hashes[INITRD_NAME] = sha256_file(staging / INITRD_NAME)
        if modules_dir is not None:
            target = staging / MODULES_NAME / modules_dir.name
            target.parent.mkdir()
            try:
                modules_dir.rename(target)
            except OSError:
                shutil.copytree(modules_dir, target, symlinks=True)
        entry = KernelEntry(
            id=kernel_id,
            name=name,
            source=str(meta["source"]),
            version=None if meta.get("version") is None else str(meta["version"]),
            kernel=kernel_name,
            initrd=INITRD_NAME if initrd is not None else None,
            modules=MODULES_NAME if modules_dir is not None else None,
            sha256=hashes,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            path=final,
            meta=extra,
        )
        with open(staging / META_NAME, "w") as f:
            f.write(json.dumps(entry.to_json(), indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        (staging / META_NAME).chmod(0o444)
        durable.publish_dir(staging, final)
    except BaseException:
        discard_tree(staging)
        raise
    return entry
