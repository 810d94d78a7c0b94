"""The files API of a running VM, as :class:`~banger.client.BangerClient` methods.

    with BangerClient() as client:
        with open("data.bin", "rb") as f:
            client.write_file("t1", "/root/data.bin", f, mode=0o600)
        with open("copy.bin", "wb") as f:
            client.read_file("t1", "/root/data.bin", f)
        for entry in client.list_files("t1", "/root"):
            print(entry.name, entry.type, entry.size)

Contents stream both ways: :meth:`~FilesAPI.read_file` writes to a binary
file object as the daemon sends, :meth:`~FilesAPI.write_file` sends from one
as it reads (HTTP chunked encoding), so neither side holds a whole file in
memory. A write is atomic in the guest (temporary file + rename): if this
process dies mid-write, nothing appears under the target's name.

Guest paths are absolute, or relative to the guest user's home (``/root``).
Errors are the daemon's, rebuilt: :class:`~banger.errors.NotFound` (unknown VM,
missing path), :class:`~banger.errors.Conflict` (VM not running, target
exists, not a directory), :class:`~banger.errors.PermissionDenied` (refused
in the guest), :class:`~banger.errors.InvalidArgument` (bad path or mode).

A mixin: it uses the client's socket, timeouts and error handling (through
``_open_socket`` and ``_response_error``, so this module never imports
:mod:`banger.client`), and stays free of pydantic (entries are plain
dataclasses), like the rest of the client.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode

from banger import http_unix
from banger.errors import BangerError, InvalidArgument

if TYPE_CHECKING:
    from pathlib import Path

    from banger.paths import Paths

#: Pieces read from a local file per chunk sent (the daemon gathers 1 MiB per SFTP write).
SEND_CHUNK = 256 * 1024
#: Called with the bytes moved so far.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class GuestEntry:
    """A guest file as the daemon describes it (``FileEntryModel`` in routes_files)."""

    name: str
    #: file, dir, symlink, fifo, socket, char, block or unknown
    type: str
    size: int
    #: permission bits (``0o644``)
    mode: int
    uid: int | None
    gid: int | None
    mtime: float | None
    #: a symlink's target, as stored
    target: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> GuestEntry:
        if not isinstance(data, dict):
            raise BangerError(f"bangerd sent {type(data).__name__} where a file entry was expected")
        try:
            return cls(
                name=str(data["name"]),
                type=str(data["type"]),
                size=int(data["size"]),
                mode=int(data["mode"]),
                uid=data.get("uid"),
                gid=data.get("gid"),
                mtime=data.get("mtime"),
                target=data.get("target"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BangerError(f"bangerd sent a file entry without {exc}") from None


def path_segment(value: str) -> str:
    """One URL path segment; an id with a slash would silently hit another route."""
    if not value or "/" in value or value in (".", ".."):
        raise InvalidArgument(f"invalid id: {value!r}", hint="ids look like 3f9a1c2b7d10")
    return value


def _files_path(vm: str, *rest: str) -> str:
    return "/".join(["/v1/vms", path_segment(vm), "files", *rest])


class FilesAPI:
    """Mixed into :class:`~banger.client.BangerClient`: a VM's files, streamed."""

    if TYPE_CHECKING:
        paths: Paths
        socket_path: Path
        timeout: float

        def request(
            self,
            method: str,
            path: str,
            *,
            params: dict[str, str] | None = None,
            json: dict[str, Any] | None = None,
        ) -> Any: ...

        def _transport_failed(
            self, exc: BaseException, *, connecting: bool = False
        ) -> NoReturn: ...

        def _open_socket(self) -> socket.socket: ...

        def _response_error(self, status: int, body: bytes) -> BangerError: ...

    # -- contents ----------------------------------------------------------------
    def read_file(
        self, vm: str, path: str, out: IO[bytes], *, progress: Progress | None = None
    ) -> int:
        """Copy guest file ``path`` (symlinks followed) into ``out``; the number of bytes.

        A transfer cut short (the guest or daemon failed mid-file) raises
        :class:`~banger.errors.BangerError`; ``out`` then holds a prefix only.
        """
        done = 0
        target = f"{_files_path(vm, 'content')}?{urlencode({'path': path})}"
        with self._stream_exchange("GET", target, None) as resp:
            try:
                for piece in resp.iter_bytes():
                    out.write(piece)
                    done += len(piece)
                    if progress is not None:
                        progress(done)
            except (OSError, http_unix.ProtocolError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
                    raise  # writing ``out`` failed: the caller's file, the caller's error
                raise BangerError(
                    f"reading {path} from VM {vm} was cut short after {done} bytes ({exc})",
                    hint=f"the guest or bangerd failed mid-transfer; see {self.paths.daemon_log}",
                ) from exc
        return done

    def write_file(
        self,
        vm: str,
        path: str,
        source: IO[bytes] | bytes,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        parents: bool = False,
        progress: Progress | None = None,
    ) -> GuestEntry:
        """Create or replace guest file ``path`` with ``source``'s bytes, atomically.

        ``mode``/``uid``/``gid`` default to the replaced file's (0o644 and the guest
        user for a new one); ``parents`` makes missing directories. A symlink at
        ``path`` is replaced by the file, not written through.
        """
        params: dict[str, str] = {"path": path}
        for key, value in (("mode", mode), ("uid", uid), ("gid", gid)):
            if value is not None:
                params[key] = str(value)
        if parents:
            params["parents"] = "true"
        target = f"{_files_path(vm, 'content')}?{urlencode(params)}"
        with self._stream_exchange("PUT", target, _pieces(source, progress)) as resp:
            body = resp.read()
        return GuestEntry.from_json(_json(body))

    # -- metadata ----------------------------------------------------------------
    def stat_file(self, vm: str, path: str, *, follow: bool = False) -> GuestEntry:
        """``path`` described (a symlink itself, unless ``follow``)."""
        params = {"path": path, "follow": "true" if follow else "false"}
        return GuestEntry.from_json(self.request("GET", _files_path(vm, "stat"), params=params))

    def list_files(self, vm: str, path: str) -> list[GuestEntry]:
        """Directory ``path``'s entries, sorted by name (symlinks described, not followed)."""
        data = self.request("GET", _files_path(vm, "list"), params={"path": path})
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise BangerError("bangerd sent a listing without entries")
        return [GuestEntry.from_json(item) for item in entries]

    def make_dir(
        self, vm: str, path: str, *, parents: bool = True, mode: int | None = None
    ) -> GuestEntry:
        """``mkdir -p`` (or, without ``parents``, a plain mkdir that refuses an existing path)."""
        body: dict[str, Any] = {"path": path, "parents": parents}
        if mode is not None:
            body["mode"] = mode
        return GuestEntry.from_json(self.request("POST", _files_path(vm, "mkdir"), json=body))

    def remove_file(self, vm: str, path: str, *, recursive: bool = False) -> None:
        """Remove a file, a symlink, or a directory (a non-empty one only if ``recursive``)."""
        params = {"path": path, "recursive": "true" if recursive else "false"}
        self.request("DELETE", _files_path(vm), params=params)

    def rename_file(
        self, vm: str, source: str, dest: str, *, overwrite: bool = False
    ) -> GuestEntry:
        """Rename within the guest; ``overwrite`` atomically replaces a file at ``dest``."""
        body = {"source": source, "dest": dest, "overwrite": overwrite}
        return GuestEntry.from_json(self.request("POST", _files_path(vm, "rename"), json=body))

    def make_symlink(self, vm: str, path: str, target: str) -> GuestEntry:
        """Make ``path`` a symlink to ``target`` (stored as given)."""
        body = {"path": path, "target": target}
        return GuestEntry.from_json(self.request("POST", _files_path(vm, "symlink"), json=body))

    # -- plumbing ----------------------------------------------------------------
    @contextmanager
    def _stream_exchange(
        self, method: str, target: str, body: Iterator[bytes] | None
    ) -> Iterator[http_unix.Response]:
        """One request with a streamed body (or none); a 2xx response, read in the block.

        If the daemon answers before taking the whole body (it refused the
        request: unknown VM, missing directory), sending fails with a broken
        pipe and its answer is read instead.
        """
        sock = self._open_socket()
        try:
            sock.settimeout(self.timeout)
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = "application/octet-stream"
            with sock.makefile("rb") as stream:
                try:
                    if body is None:
                        http_unix.send_request(sock, method, target, headers)
                    else:
                        _send_body(sock, method, target, headers, body)
                    resp = http_unix.read_response(stream)
                except (OSError, http_unix.ProtocolError) as exc:
                    self._transport_failed(exc)
                if resp.status >= 400:
                    try:
                        content = resp.read()
                    except (OSError, http_unix.ProtocolError) as exc:
                        self._transport_failed(exc)
                    raise self._response_error(resp.status, content)
                yield resp
        finally:
            sock.close()


def _send_body(
    sock: socket.socket,
    method: str,
    target: str,
    headers: dict[str, str],
    body: Iterator[bytes],
) -> None:
    try:
        http_unix.send_request_stream(sock, method, target, headers, body)
    except (BrokenPipeError, ConnectionResetError):
        # The daemon answered early and closed: its answer is what matters.
        sock.shutdown(socket.SHUT_WR)


def _pieces(source: IO[bytes] | bytes, progress: Progress | None) -> Iterator[bytes]:
    done = 0
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)
        for start in range(0, len(view), SEND_CHUNK):
            piece = bytes(view[start : start + SEND_CHUNK])
            done += len(piece)
            yield piece
            if progress is not None:
                progress(done)
        return
    while piece := source.read(SEND_CHUNK):
        done += len(piece)
        yield piece
        if progress is not None:
            progress(done)


def _json(body: bytes) -> Any:
    import json

    try:
        return json.loads(body)
    except ValueError as exc:
        raise BangerError(
            "bangerd sent a response that is not JSON",
            hint="the daemon and CLI versions may differ; restart bangerd",
        ) from exc
