"""Files in a guest over SFTP (asyncssh's client against the guest's OpenSSH ``sftp-server``).

What bangerd's files API (:mod:`banger.daemon.api.vms.files`) does with a guest
path: stream a file out, stream one in, stat, list, ``mkdir -p``, remove,
rename, make a symlink. Every guest error becomes a :class:`BangerError` whose
one line names the path: a missing path is :class:`NotFound`, a refusal
:class:`PermissionDenied`, an existing target :class:`Conflict`.

Writes are atomic in the guest: the data goes to a temporary file in the
target's directory (``.banger-upload-<hex>``, created exclusively, mode 0600),
which gets its mode and owner and is then renamed over the target with
OpenSSH's ``posix-rename`` (plain SFTP rename refuses an existing target).
Readers see the old file or the new one, never a part. If the data stream
fails (the client vanished) the temporary file is removed and nothing exists
under the target's name that did not exist before; only a guest connection
that dies mid-write can leave the temporary file behind.

Paths are absolute, or relative to the login user's home (SFTP's working
directory: ``/root``). Names are UTF-8 (newlines and any other character but
NUL included); a name that is not UTF-8 is refused.
"""

from __future__ import annotations

import asyncio
import posixpath
import secrets
import stat as stat_mod
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import asyncssh

from banger.errors import BangerError, Conflict, InvalidArgument, NotFound, PermissionDenied

#: How much one read asks the guest for (asyncssh splits it into parallel requests).
READ_CHUNK = 1024 * 1024
#: Request-body pieces are gathered up to this size before one (parallel) SFTP write.
WRITE_CHUNK = 1024 * 1024
#: Blocks being written at once (each WRITE_CHUNK, at its own offset).
WRITES_IN_FLIGHT = 4
#: The longest path accepted (Linux PATH_MAX).
MAX_PATH = 4096
TEMP_PREFIX = ".banger-upload-"
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755

FileType = Literal["file", "dir", "symlink", "fifo", "socket", "char", "block", "unknown"]
_TYPES: tuple[tuple[Any, FileType], ...] = (
    (stat_mod.S_ISREG, "file"),
    (stat_mod.S_ISDIR, "dir"),
    (stat_mod.S_ISLNK, "symlink"),
    (stat_mod.S_ISFIFO, "fifo"),
    (stat_mod.S_ISSOCK, "socket"),
    (stat_mod.S_ISCHR, "char"),
    (stat_mod.S_ISBLK, "block"),
)


class SFTPUnavailable(BangerError):
    """The guest's sshd has no ``sftp`` subsystem (or refused to start it)."""

    http_status = 502


@dataclass(frozen=True)
class FileEntry:
    """One guest file as stat/list report it (a symlink is described, not followed)."""

    #: the last component (list) or the path asked about (stat)
    name: str
    type: FileType
    size: int
    #: permission bits, setuid/setgid/sticky included (0o644 is 420)
    mode: int
    uid: int | None
    gid: int | None
    #: seconds since the epoch
    mtime: float | None
    #: where a symlink points (as stored: may be relative or dangling)
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_path(path: str, field: str = "path") -> str:
    """``path`` if it can name a guest file: not empty, no NUL, not longer than PATH_MAX."""
    if not path:
        raise InvalidArgument(f"{field}: empty path")
    if "\0" in path:
        raise InvalidArgument(f"{field}: a guest path cannot contain a NUL byte")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise InvalidArgument(f"{field}: longer than {MAX_PATH} bytes")
    return path


def check_mode(mode: int | None, field: str = "mode") -> int | None:
    if mode is not None and not 0 <= mode <= 0o7777:
        raise InvalidArgument(f"{field}: {mode} is not a permission mode (0 to 0o7777)")
    return mode


def check_owner(uid: int | None, gid: int | None) -> None:
    for name, value in (("uid", uid), ("gid", gid)):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise InvalidArgument(f"{name}: {value} is not a user or group id")


def file_type(permissions: int | None) -> FileType:
    if permissions is None:
        return "unknown"
    for test, name in _TYPES:
        if test(permissions):
            return name
    return "unknown"


def entry_from(name: str, attrs: asyncssh.SFTPAttrs, target: str | None = None) -> FileEntry:
    perms = attrs.permissions
    mtime: float | None = None
    if attrs.mtime is not None:
        mtime = attrs.mtime + (attrs.mtime_ns or 0) / 1e9
    return FileEntry(
        name=name,
        type=file_type(perms),
        size=attrs.size or 0,
        mode=stat_mod.S_IMODE(perms) if perms is not None else 0,
        uid=attrs.uid,
        gid=attrs.gid,
        mtime=mtime,
        target=target,
    )


def _describe(exc: asyncssh.SFTPError) -> str:
    reason = (exc.reason or "").strip()
    return reason if reason and reason.lower() not in ("failure", "") else "the guest refused"


@contextmanager
def guest_errors(vm: str, path: str) -> Iterator[None]:
    """SFTP errors about ``path`` as banger's: one line naming the path and the VM."""
    where = f"{path} in VM {vm}"
    try:
        yield
    except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
        raise NotFound(f"{where}: no such file or directory") from None
    except asyncssh.SFTPPermissionDenied:
        raise PermissionDenied(f"{where}: permission denied") from None
    except asyncssh.SFTPFileAlreadyExists:
        raise Conflict(f"{where}: already exists") from None
    except (asyncssh.SFTPNotADirectory, asyncssh.SFTPFileIsADirectory) as exc:
        raise Conflict(f"{where}: {_describe(exc)}") from None
    except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
        raise BangerError(
            f"{where}: the connection to the guest was lost",
            hint="the VM may have stopped or its sshd restarted; try again",
        ) from None
    except asyncssh.SFTPError as exc:
        raise BangerError(f"{where}: {_describe(exc)}") from None
    except UnicodeError:
        raise InvalidArgument(f"{where}: a name there is not UTF-8") from None


@asynccontextmanager
async def open_sftp(conn: asyncssh.SSHClientConnection, vm: str) -> AsyncIterator[GuestFiles]:
    """An SFTP session on ``conn`` (one channel), closed on exit."""
    try:
        sftp = await conn.start_sftp_client()
    except (asyncssh.ChannelOpenError, asyncssh.SFTPError, asyncssh.ProcessError) as exc:
        raise SFTPUnavailable(
            f"VM {vm}: the guest's sshd did not start SFTP ({exc})",
            hint="the image needs an SFTP server (Debian: openssh-sftp-server) and "
            "`Subsystem sftp` in its sshd_config",
        ) from None
    try:
        yield GuestFiles(sftp, vm)
    finally:
        sftp.exit()
        with suppress(Exception):
            await sftp.wait_closed()


class GuestFiles:
    """The files API's operations on one SFTP session (``vm`` names the guest in errors)."""

    def __init__(self, sftp: asyncssh.SFTPClient, vm: str) -> None:
        self.sftp = sftp
        self.vm = vm

    # -- reading ------------------------------------------------------------------
    async def stat(self, path: str, *, follow: bool = False) -> FileEntry:
        """``path`` described (with ``follow``, what a symlink points at)."""
        check_path(path)
        with guest_errors(self.vm, path):
            attrs = await (self.sftp.stat(path) if follow else self.sftp.lstat(path))
            target = None
            if not follow and stat_mod.S_ISLNK(attrs.permissions or 0):
                target = await self.sftp.readlink(path)
        return entry_from(path, attrs, target)

    async def list(self, path: str) -> list[FileEntry]:
        """The entries of directory ``path`` (symlinks not followed), sorted by name."""
        check_path(path)
        entries: list[FileEntry] = []
        with guest_errors(self.vm, path):
            if file_type((await self.sftp.stat(path)).permissions) != "dir":
                raise Conflict(f"{path} in VM {self.vm}: not a directory")
            for item in await self.sftp.readdir(path):
                name = item.filename
                assert isinstance(name, str)
                if name in (".", ".."):
                    continue
                if not name or "/" in name or "\0" in name:
                    # only a broken or hostile sftp-server says this; a copy would follow it
                    raise BangerError(
                        f"{path} in VM {self.vm}: the guest listed a bad name {name!r}"
                    )
                target = None
                if stat_mod.S_ISLNK(item.attrs.permissions or 0):
                    with suppress(asyncssh.SFTPError):
                        target = await self.sftp.readlink(posixpath.join(path, name))
                entries.append(entry_from(name, item.attrs, target))
        return sorted(entries, key=lambda e: e.name)

    async def open_read(self, path: str) -> tuple[FileEntry, AsyncIterator[bytes]]:
        """``path``'s description and its content as chunks; close the iterator when done."""
        check_path(path)
        with guest_errors(self.vm, path):
            attrs = await self.sftp.stat(path)
            kind = file_type(attrs.permissions)
            if kind == "dir":
                raise InvalidArgument(
                    f"path: {path} in VM {self.vm} is a directory",
                    hint="list it, or copy it with `banger vm cp`",
                )
            if kind != "file":
                # a fifo would block the request forever, /dev/zero never end
                raise InvalidArgument(f"path: {path} in VM {self.vm} is a {kind}, not a file")
            handle = await self.sftp.open(path, "rb")
        return entry_from(path, attrs), self._chunks(path, handle)

    async def _chunks(self, path: str, handle: asyncssh.SFTPClientFile) -> AsyncIterator[bytes]:
        """The file's chunks; the next is read from the guest while this one is sent on."""

        async def read() -> bytes:
            with guest_errors(self.vm, path):
                # opened "rb": bytes (asyncssh types read() as str)
                return cast(bytes, await handle.read(READ_CHUNK))

        ahead: asyncio.Future[bytes] | None = None
        try:
            ahead = asyncio.ensure_future(read())
            while True:
                data = await ahead
                if not data:
                    return
                ahead = asyncio.ensure_future(read())
                yield data
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            with suppress(Exception):
                await handle.close()

    # -- writing ------------------------------------------------------------------
    async def write(
        self,
        path: str,
        data: AsyncIterable[bytes],
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        parents: bool = False,
    ) -> FileEntry:
        """Replace (or create) ``path`` with ``data``, atomically (see the module docstring).

        ``mode``, ``uid`` and ``gid`` default to the replaced file's, or 0644 and the
        login user for a new file. With ``parents`` missing directories are made.
        A symlink at ``path`` is replaced, not written through.
        """
        check_path(path)
        check_mode(mode)
        check_owner(uid, gid)
        parent = posixpath.dirname(path.rstrip("/")) or ("/" if path.startswith("/") else ".")
        if parents:
            await self.mkdir(parent, parents=True)
        with guest_errors(self.vm, path):
            try:
                old: asyncssh.SFTPAttrs | None = await self.sftp.lstat(path)
            except asyncssh.SFTPNoSuchFile:
                old = None
        if old is not None and file_type(old.permissions) == "dir":
            raise Conflict(f"{path} in VM {self.vm}: is a directory")
        temp = posixpath.join(parent, TEMP_PREFIX + secrets.token_hex(8))
        with guest_errors(self.vm, parent):
            handle = await self.sftp.open(temp, "xb", asyncssh.SFTPAttrs(permissions=0o600))
        try:
            with guest_errors(self.vm, path):
                await _copy_in(handle, data)
                with suppress(asyncssh.SFTPOpUnsupported):
                    await handle.fsync()  # the rename must not publish unwritten data
                await handle.close()
                await self._settle(temp, old, mode, uid, gid)
                await self.sftp.posix_rename(temp, path)
        except BaseException:
            with suppress(Exception):
                await handle.close()
            with suppress(Exception):
                await self.sftp.remove(temp)
            raise
        return await self.stat(path)

    async def _settle(
        self,
        temp: str,
        old: asyncssh.SFTPAttrs | None,
        mode: int | None,
        uid: int | None,
        gid: int | None,
    ) -> None:
        """Give the temporary file its final owner, then mode (chown clears setuid bits)."""
        if uid is None and old is not None:
            uid = old.uid
        if gid is None and old is not None:
            gid = old.gid
        if uid is not None or gid is not None:
            now = await self.sftp.stat(temp)
            want_uid = now.uid if uid is None else uid
            want_gid = now.gid if gid is None else gid
            if (want_uid, want_gid) != (now.uid, now.gid):
                await self.sftp.setstat(temp, asyncssh.SFTPAttrs(uid=want_uid, gid=want_gid))
        if mode is None:
            mode = stat_mod.S_IMODE(old.permissions or 0) if old is not None else DEFAULT_FILE_MODE
        await self.sftp.chmod(temp, mode)

    # -- the rest -----------------------------------------------------------------
    async def mkdir(
        self, path: str, *, parents: bool = False, mode: int | None = None
    ) -> FileEntry:
        """Make directory ``path``; with ``parents`` also its missing parents (and no error if it
        exists as a directory), as ``mkdir -p``."""
        check_path(path)
        check_mode(mode)
        attrs = asyncssh.SFTPAttrs(permissions=DEFAULT_DIR_MODE if mode is None else mode)
        with guest_errors(self.vm, path):
            if parents:
                await self._makedirs(path, attrs)
            else:
                try:
                    await self.sftp.mkdir(path, attrs)
                except asyncssh.SFTPFailure:
                    if await self.sftp.exists(path):
                        raise Conflict(f"{path} in VM {self.vm}: already exists") from None
                    raise
            if mode is not None:
                await self.sftp.chmod(path, mode)  # the guest's umask applied to mkdir
        return await self.stat(path)

    async def _makedirs(self, path: str, attrs: asyncssh.SFTPAttrs) -> None:
        try:
            await self.sftp.makedirs(path, attrs, exist_ok=True)
        except asyncssh.SFTPFailure as exc:
            if "is not a directory" in (exc.reason or ""):
                raise Conflict(f"{path} in VM {self.vm}: {exc.reason}") from None
            raise

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        """Remove a file, symlink (not what it points at) or directory (empty, or ``recursive``)."""
        check_path(path)
        if path.rstrip("/") in ("", "/"):
            raise InvalidArgument("path: refusing to remove the guest's root directory")
        with guest_errors(self.vm, path):
            kind = file_type((await self.sftp.lstat(path)).permissions)
            if kind != "dir":
                await self.sftp.remove(path)
            elif recursive:
                await self.sftp.rmtree(path)
            else:
                try:
                    await self.sftp.rmdir(path)
                except asyncssh.SFTPFailure:
                    if await self.sftp.listdir(path):
                        raise Conflict(
                            f"{path} in VM {self.vm}: directory not empty",
                            hint="remove it recursively",
                        ) from None
                    raise

    async def rename(self, source: str, dest: str, *, overwrite: bool = False) -> FileEntry:
        """Rename ``source`` to ``dest`` (atomically replacing a file there with ``overwrite``)."""
        check_path(source, "source")
        check_path(dest, "dest")
        with guest_errors(self.vm, source):
            await self.sftp.lstat(source)
        with guest_errors(self.vm, dest):
            if overwrite:
                await self.sftp.posix_rename(source, dest)
            else:
                if await _lexists(self.sftp, dest):
                    raise Conflict(
                        f"{dest} in VM {self.vm}: already exists", hint="ask to overwrite it"
                    )
                await self.sftp.rename(source, dest)
        return await self.stat(dest)

    async def symlink(self, path: str, target: str) -> FileEntry:
        """Make ``path`` a symlink to ``target`` (stored as given: relative stays relative)."""
        check_path(path)
        check_path(target, "target")
        with guest_errors(self.vm, path):
            if await _lexists(self.sftp, path):
                raise Conflict(f"{path} in VM {self.vm}: already exists")
            await self.sftp.symlink(target, path)
        return await self.stat(path)


async def _lexists(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        await sftp.lstat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    return True


async def _copy_in(handle: asyncssh.SFTPClientFile, data: AsyncIterable[bytes]) -> None:
    """Write ``data`` in blocks of WRITE_CHUNK, up to WRITES_IN_FLIGHT of them at once.

    Each block is one round of parallel SFTP requests at its own offset; while
    the guest acknowledges one, the next is gathered from the request body, so
    the body never waits on a round trip. Memory stays bounded (blocks in
    flight plus the one being gathered): past that the body is not read, and
    uvicorn stops reading the client's socket.
    """
    in_flight: set[asyncio.Task[int]] = set()
    offset = 0

    async def settle(limit: int) -> None:
        while len(in_flight) > limit:
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            in_flight.difference_update(done)
            for task in done:
                task.result()  # a failed write fails the copy now

    def send(block: bytes) -> None:
        nonlocal offset
        in_flight.add(asyncio.ensure_future(handle.write(block, offset)))
        offset += len(block)

    pending: list[bytes] = []
    size = 0
    try:
        async for piece in data:
            pending.append(piece)
            size += len(piece)
            if size >= WRITE_CHUNK:
                await settle(WRITES_IN_FLIGHT - 1)
                send(b"".join(pending))
                pending, size = [], 0
        if pending:
            send(b"".join(pending))
        await settle(0)
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
