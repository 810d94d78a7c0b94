"""Flatten OCI layers into one root tree, member by member, refusing escapes.

Layers are applied in manifest order onto a fresh directory (as root: the
tree keeps numeric owners, setuid bits, device nodes and file capabilities).
Each layer blob is streamed once: its sha256 is checked as it is read, gzip
or zstd is detected from the first bytes and decompressed on the fly, and the
tar is read as a stream (``r|``), so nothing is unpacked twice.

OCI semantics applied here:

- ``.wh.<name>`` deletes ``<name>`` as left by the lower layers (not what
  the same layer creates); ``.wh..wh..opq`` empties its directory of
  everything the lower layers put there. Whiteouts themselves are not written.
- a hard link may point at a file from an earlier layer;
- an entry replaces whatever was at its path (a directory stays a directory
  and only gets its metadata updated);
- metadata: numeric owner, mode (setuid/setgid/sticky), mtime, and the
  extended attributes a guest needs (``security.capability`` and ``user.*``;
  read from ``SCHILY.xattr.*`` and ``LIBARCHIVE.xattr.*`` PAX records).
  Other namespaces (``security.selinux``, ``trusted.*``) are dropped: they
  describe the image author's host, not the guest.

Safety (Python 3.11 has no tar extraction filters): every entry is checked
right before it is written. Refused with :class:`HostileLayer`, naming the
layer digest and the entry: absolute names, ``..`` components, any path
(entry or hard-link source) whose parent directories include a symlink in the
tree as built so far, hard links to something missing or to a directory, and
whiteouts naming ``.``/``..``; names the filesystem cannot hold (a component
over 255 bytes, a path or symlink target over 4095) are refused the same way
instead of failing with a bare ``OSError``. Files are created with ``O_EXCL|O_NOFOLLOW``
after removing what was there, so no write ever goes through a symlink, and
hard links are made with ``follow_symlinks=False``. Real image builders never
produce an entry below a symlinked directory (their diffs name real paths),
so refusing the shape costs nothing legitimate.

Size: every entry is charged to an :class:`banger.images.oci.budget.UnpackBudget`
(its declared size, read from the tar header before any of its data is
written), so a layer that expands to more than the cap or the free space
stops the flatten with one line naming the layer and the entry.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast
from urllib.parse import unquote

import zstandard

from banger.errors import BangerError
from banger.images.common import Progress, no_progress, require_root
from banger.images.oci.budget import DEFAULT_MAX_UNPACKED, UnpackBudget
from banger.images.oci.config import BadImage
from banger.rmtree import remove_tree

_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_XATTR_PREFIXES = ("SCHILY.xattr.", "LIBARCHIVE.xattr.")
#: Linux (and ext4): a name component up to 255 bytes, a path up to 4095.
NAME_MAX = 255
PATH_MAX = 4095
_TOO_LONG_HINT = (
    "the image holds a name the filesystem cannot store (components up to"
    f" {NAME_MAX} bytes, paths up to {PATH_MAX}); rebuild it without that file"
)


class HostileLayer(BangerError):
    """A layer entry tried to write outside the tree (or through a symlink)."""

    http_status = 400
    exit_code = 2


def _keep_xattr(name: str) -> bool:
    return name == "security.capability" or name.startswith("user.")


def member_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    """The extended attributes of ``member`` banger applies, as raw bytes."""
    out: dict[str, bytes] = {}
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            name = key.removeprefix("SCHILY.xattr.")
            # tarfile decodes binary values with surrogateescape; undo it.
            raw = value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote(key.removeprefix("LIBARCHIVE.xattr."))
            raw = base64.b64decode(value + "=" * (-len(value) % 4))
        else:
            continue
        if _keep_xattr(name):
            out[name] = raw
    return out


def shown(name: str, limit: int = 200) -> str:
    """``name`` for a one-line message: a very long one keeps its start and end."""
    return name if len(name) <= limit else f"{name[: limit - 60]}…{name[-59:]}"


class _HashingReader(io.RawIOBase):
    """Reads a blob, hashing every byte that passes."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)


def _decompressed(source: io.BufferedReader[_HashingReader]) -> IO[bytes]:
    """``source`` decompressed by sniffing its first bytes (gzip, zstd or plain tar)."""
    head = source.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        import gzip

        return cast(IO[bytes], gzip.GzipFile(fileobj=source, mode="rb"))
    if head.startswith(_ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    return source


@dataclass
class _Layer:
    """Applies the members of one layer to ``tree``."""

    tree: Path
    digest: str
    dir_times: dict[Path, float]
    budget: UnpackBudget
    #: Paths this layer created: whiteouts and opaque markers spare them.
    created: set[tuple[str, ...]] = field(default_factory=set)

    def hostile(self, name: str, why: str, hint: str | None = None) -> HostileLayer:
        return HostileLayer(
            f"layer {self.digest} is refused: entry {shown(name)!r} {why}",
            hint=hint or "the image tries to write outside its root; do not use it",
        )

    def parts(self, path: str, entry: str | None = None, what: str = "") -> tuple[str, ...]:
        """``path`` split into components; absolute paths and ``..`` are hostile."""
        entry = path if entry is None else entry
        if path.startswith("/"):
            raise self.hostile(entry, f"{what}is an absolute path")
        parts = tuple(p for p in path.split("/") if p not in ("", "."))
        if ".." in parts:
            raise self.hostile(entry, f"{what}contains '..'")
        for part in parts:
            if len(os.fsencode(part)) > NAME_MAX:
                raise self.hostile(entry, f"{what}has a name component over {NAME_MAX} bytes"
                                   f" ({shown(part, 60)!r})", _TOO_LONG_HINT)  # fmt: skip
        return parts

    def too_long(self, name: str) -> HostileLayer:
        return self.hostile(name, "is a path or link target too long for the filesystem",
                            _TOO_LONG_HINT)  # fmt: skip

    def parent(self, name: str, parts: tuple[str, ...], *, create: bool) -> Path:
        """The host directory holding ``parts[-1]``; no component may be a symlink."""
        current = self.tree
        for i, part in enumerate(parts[:-1]):
            current = current / part
            try:
                st = current.lstat()
            except FileNotFoundError:
                if not create:
                    missing = "/" + "/".join(parts[: i + 1])
                    raise self.hostile(name, f"needs {missing}, which is missing") from None
                # A parent the layer did not list: what image builders mean is
                # a plain root-owned directory.
                current.mkdir(mode=0o755)
                os.chown(current, 0, 0)
                current.chmod(0o755)
                continue
            if stat.S_ISLNK(st.st_mode):
                raise self.hostile(
                    name, f"goes through the symlink /{'/'.join(parts[: i + 1])} in the tree"
                )
            if not stat.S_ISDIR(st.st_mode):
                raise self.hostile(
                    name, f"goes through the non-directory /{'/'.join(parts[: i + 1])}"
                )
        return current

    def apply(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        name = member.name
        parts = self.parts(name)
        if not parts:
            return  # the layer's "./": the tree root stays 0755 root:root
        base = parts[-1]
        if base.startswith(WHITEOUT):
            self.whiteout(name, parts)
            return
        # Charged before a byte is written: the header says how big it is.
        self.budget.charge(self.digest, name, member.size if member.isreg() else 0)
        parent = self.parent(name, parts, create=True)
        target = parent / base
        self.created.add(parts)
        if member.islnk():
            self.hard_link(member, parts, target)
            return
        existing = _lstat(target)
        if existing is not None and not (member.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(target, existing)
        mode = member.mode & 0o7777
        if member.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                target.mkdir(mode=0o700)
            os.chown(target, member.uid, member.gid)
            target.chmod(mode)
            self.set_xattrs(target, member)
            self.dir_times[target] = member.mtime
        elif member.isreg():
            self.write_file(member, tar, target, mode)
        elif member.issym():
            target.symlink_to(member.linkname)
            os.chown(target, member.uid, member.gid, follow_symlinks=False)
            with contextlib.suppress(OSError):
                ns = int(member.mtime * 1e9)
                os.utime(target, ns=(ns, ns), follow_symlinks=False)
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = (
                stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            )
            device = os.makedev(member.devmajor, member.devminor) if not member.isfifo() else 0
            os.mknod(target, kind | 0o600, device)
            os.chown(target, member.uid, member.gid)
            target.chmod(mode)
        else:
            self.created.discard(parts)  # an unknown type: nothing written

    def whiteout(self, name: str, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        try:
            parent = self.parent(name, parts, create=False)
        except HostileLayer:
            if not _lexists_prefix(self.tree, parts[:-1]):
                return  # whiting out inside a directory that is not there: nothing to do
            raise
        if base == OPAQUE:
            for child in list(parent.iterdir()):
                if (*parts[:-1], child.name) not in self.created:
                    _remove(child, child.lstat())
            return
        if base.startswith(WHITEOUT + WHITEOUT):
            return  # other aufs metadata (.wh..wh.plnk, ...): not files of the image
        victim = base.removeprefix(WHITEOUT)
        if victim in ("", ".", ".."):
            raise self.hostile(name, f"whites out {victim!r}")
        if (*parts[:-1], victim) in self.created:
            return
        target = parent / victim
        existing = _lstat(target)
        if existing is not None:
            _remove(target, existing)

    def hard_link(self, member: tarfile.TarInfo, parts: tuple[str, ...], target: Path) -> None:
        name = member.name
        if not member.linkname:
            raise self.hostile(name, "is a hard link without a target")
        src_parts = self.parts(member.linkname, name, f"links to {member.linkname!r}, which ")
        if not src_parts:
            raise self.hostile(name, "is a hard link to the tree root")
        source = self.parent(name, src_parts, create=False) / src_parts[-1]
        src_stat = _lstat(source)
        if src_stat is None:
            raise self.hostile(name, f"links to {member.linkname!r}, which is missing")
        if stat.S_ISDIR(src_stat.st_mode):
            raise self.hostile(name, f"links to the directory {member.linkname!r}")
        if source == target:
            return
        existing = _lstat(target)
        if existing is not None:
            _remove(target, existing)
        os.link(source, target, follow_symlinks=False)

    def write_file(
        self, member: tarfile.TarInfo, tar: tarfile.TarFile, target: Path, mode: int
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(target, flags, 0o600)
        try:
            data = tar.extractfile(member)
            if data is not None:
                with data:
                    while chunk := data.read(_CHUNK):
                        os.write(fd, chunk)
            # chown clears setuid bits and file capabilities: mode and xattrs after it.
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, mode)
            for key, value in member_xattrs(member).items():
                os.setxattr(fd, key, value)
            ns = int(member.mtime * 1e9)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def set_xattrs(self, target: Path, member: tarfile.TarInfo) -> None:
        for key, value in member_xattrs(member).items():
            os.setxattr(target, key, value, follow_symlinks=False)


def _lexists_prefix(tree: Path, parts: tuple[str, ...]) -> bool:
    """Whether every directory of ``parts`` exists (symlinks count as existing)."""
    current = tree
    for part in parts:
        current = current / part
        st = _lstat(current)
        if st is None:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return True  # a symlink or file in the way: the caller reports it
    return True


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None


def _remove(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        remove_tree(path)  # iterative, by descriptor: never follows symlinks inside
    else:
        path.unlink()


def apply_layer(
    tree: Path,
    digest: str,
    blob: Path,
    dir_times: dict[Path, float],
    budget: UnpackBudget | None = None,
) -> int:
    """Apply one layer blob to ``tree``; returns the number of tar entries."""
    layer = _Layer(tree, digest, dir_times, budget or UnpackBudget.measure(tree))
    count = 0
    with open(blob, "rb") as raw:
        hashing = _HashingReader(raw)
        source = io.BufferedReader(hashing, _CHUNK)
        try:
            stream = _decompressed(source)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    try:
                        layer.apply(member, tar)
                    except OSError as exc:
                        if exc.errno == errno.ENAMETOOLONG:
                            raise layer.too_long(member.name) from None
                        raise
                    count += 1
            while source.read(_CHUNK):  # hash what the tar reader left unread
                pass
        except (tarfile.TarError, zstandard.ZstdError, zlib.error, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O error on the host, not a bad layer
            raise BadImage(f"layer {digest} is not a readable tar layer: {exc}") from exc
    actual = "sha256:" + hashing.sha256.hexdigest()
    if actual != digest:
        raise BadImage(
            f"layer {digest} does not match its digest (read {actual})",
            hint=f"remove {blob} from the cache and pull again",
        )
    return count


def flatten_layers(
    layers: Sequence[tuple[str, Path]],
    tree: Path,
    progress: Progress = no_progress,
    *,
    max_unpacked: int = DEFAULT_MAX_UNPACKED,
) -> None:
    """Apply ``layers`` (digest, blob path) in order into the new directory ``tree``. Root only.

    Stops before the unpacked size passes ``max_unpacked`` or half the free
    space measured now (:mod:`banger.images.oci.budget`).
    """
    require_root("flattening image layers")
    tree.mkdir(mode=0o755)
    os.chown(tree, 0, 0)
    budget = UnpackBudget.measure(tree, max_unpacked)
    dir_times: dict[Path, float] = {}
    for i, (digest, blob) in enumerate(layers, 1):
        progress(f"applying layer {i}/{len(layers)} {digest[:19]}…")
        apply_layer(tree, digest, blob, dir_times, budget)
    # Directory mtimes last, deepest first: creating children changed them.
    for path in sorted(dir_times, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            ns = int(dir_times[path] * 1e9)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
