"""``/v1/vms/{ref}/files/…``: a running guest's files over SFTP.

- ``GET …/files/content?path=P`` streams the file (``application/octet-stream``,
  chunked; ``X-Banger-Size`` and ``X-Banger-Mode`` say what the stat said
  before the stream began). Nothing is buffered whole: each chunk is read from
  the guest as the client takes the previous one.
- ``PUT …/files/content?path=P[&mode=&uid=&gid=&parents=]`` streams the request
  body into the guest, atomically (temporary file + rename, see
  :mod:`banger.guest.files`); a client that disconnects mid-body leaves nothing
  under ``P``. Answers the new file's entry.
- ``GET …/files/stat?path=P[&follow=]``, ``GET …/files/list?path=P``,
  ``POST …/files/mkdir``, ``DELETE …/files?path=P[&recursive=]``,
  ``POST …/files/rename``, ``POST …/files/symlink``.

Modes are integers (0o644 is 420). Errors name the path: 404 missing, 403
permission denied in the guest, 409 exists / not a directory / VM not
running, 400 a bad path or argument.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Query
from fastapi import Request as HTTPRequest
from fastapi.responses import Response as HTTPResponse
from fastapi.responses import StreamingResponse
from pydantic import Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from banger.api_models import Request, Response
from banger.daemon.vms.service import VMService
from banger.daemon.vms.stack import VMStack
from banger.errors import Conflict
from banger.guest.files import FileEntry, GuestFiles, open_sftp
from banger.store import VMRecord, VMState

OCTET = "application/octet-stream"
SIZE_HEADER = "X-Banger-Size"
MODE_HEADER = "X-Banger-Mode"

#: Opens the files API of VM ``ref`` (NotFound / Conflict when it cannot).
FilesOpener = Callable[[str], AbstractAsyncContextManager[GuestFiles]]


class FileEntryModel(Response):
    name: str = Field(description="The last component (list) or the path asked about (stat).")
    type: str = Field(description="file, dir, symlink, fifo, socket, char, block or unknown.")
    size: int
    mode: int = Field(description="Permission bits as an integer (0o644 is 420).")
    uid: int | None
    gid: int | None
    mtime: float | None = Field(description="Seconds since the epoch.")
    target: str | None = Field(default=None, description="A symlink's target, as stored.")


class FileListing(Response):
    path: str
    entries: list[FileEntryModel]


class MkdirRequest(Request):
    path: str
    parents: bool = Field(default=True, description="Make missing parents; no error if it exists.")
    mode: int | None = Field(default=None, description="Permission bits; default 0o755.")


class RenameRequest(Request):
    source: str
    dest: str
    overwrite: bool = Field(default=False, description="Atomically replace a file at dest.")


class SymlinkRequest(Request):
    path: str = Field(description="The link to make.")
    target: str = Field(description="What it points at, stored as given.")


def entry_model(entry: FileEntry) -> FileEntryModel:
    return FileEntryModel(**entry.to_json())


class _GuestStream(StreamingResponse):
    """A streaming response whose guest resources are released however it ends.

    Starlette never closes a body iterator it stopped iterating (the client went
    away) and never starts one whose response start could not be sent; the
    exit stack here closes the SFTP file, session and connection in every case.
    """

    def __init__(self, content: AsyncIterator[bytes], cleanup: AsyncExitStack, **kw: Any):
        super().__init__(content, **kw)
        self._content = content
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
            await self._cleanup.aclose()


def files_router(open_files: FilesOpener) -> APIRouter:
    router = APIRouter(tags=["files"])

    @router.get(
        "/{ref}/files/content",
        response_class=StreamingResponse,
        responses={200: {"content": {OCTET: {}}, "description": "The file's bytes"}},
    )
    async def read(ref: str, path: str = Query(description="The guest file.")) -> HTTPResponse:
        """Stream a guest file (following symlinks)."""
        cleanup = AsyncExitStack()
        try:
            files = await cleanup.enter_async_context(open_files(ref))
            entry, chunks = await files.open_read(path)
        except BaseException:
            await cleanup.aclose()
            raise
        headers = {SIZE_HEADER: str(entry.size), MODE_HEADER: str(entry.mode)}
        return _GuestStream(chunks, cleanup, media_type=OCTET, headers=headers)

    @router.put(
        "/{ref}/files/content",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {OCTET: {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def write(
        ref: str,
        request: HTTPRequest,
        path: str = Query(description="The guest file to create or replace."),
        mode: int | None = Query(default=None, description="Permission bits (0o644 is 420)."),
        uid: int | None = Query(default=None, description="Owner's uid."),
        gid: int | None = Query(default=None, description="Owner's gid."),
        parents: bool = Query(default=False, description="Make missing parent directories."),
    ) -> FileEntryModel:
        """Write the request body to a guest file atomically (temporary file + rename)."""
        async with open_files(ref) as files:
            try:
                entry = await files.write(
                    path, request.stream(), mode=mode, uid=uid, gid=gid, parents=parents
                )
            except ClientDisconnect:
                # Nobody is left to answer; the temporary file is gone (GuestFiles.write).
                raise Conflict(f"{path}: the client went away before the whole body") from None
        return entry_model(entry)

    @router.get("/{ref}/files/stat")
    async def stat(ref: str, path: str, follow: bool = False) -> FileEntryModel:
        """Describe one guest path (a symlink itself unless ``follow``)."""
        async with open_files(ref) as files:
            return entry_model(await files.stat(path, follow=follow))

    @router.get("/{ref}/files/list")
    async def list_dir(ref: str, path: str) -> FileListing:
        """A guest directory's entries, sorted by name (symlinks described, not followed)."""
        async with open_files(ref) as files:
            entries = await files.list(path)
        return FileListing(path=path, entries=[entry_model(e) for e in entries])

    @router.post("/{ref}/files/mkdir")
    async def mkdir(ref: str, body: MkdirRequest) -> FileEntryModel:
        async with open_files(ref) as files:
            return entry_model(await files.mkdir(body.path, parents=body.parents, mode=body.mode))

    @router.delete("/{ref}/files", status_code=204)
    async def remove(ref: str, path: str, recursive: bool = False) -> None:
        """Remove a file, a symlink, or a directory (non-empty only when ``recursive``)."""
        async with open_files(ref) as files:
            await files.remove(path, recursive=recursive)

    @router.post("/{ref}/files/rename")
    async def rename(ref: str, body: RenameRequest) -> FileEntryModel:
        async with open_files(ref) as files:
            entry = await files.rename(body.source, body.dest, overwrite=body.overwrite)
        return entry_model(entry)

    @router.post("/{ref}/files/symlink")
    async def symlink(ref: str, body: SymlinkRequest) -> FileEntryModel:
        async with open_files(ref) as files:
            return entry_model(await files.symlink(body.path, body.target))

    return router


# -- the daemon's opener: VM record → held guest connection → SFTP session -------------


def _require_running(vm: VMRecord, vms: VMService) -> None:
    if vm.state != VMState.RUNNING or vm.ip is None or not vms.alive(vm):
        raise Conflict(
            f"VM {vm.name} is {vm.state.value}, not running",
            hint=f"start it first: banger vm start {vm.name}",
        )


def vm_files_opener(stack: VMStack) -> FilesOpener:
    """How the daemon reaches a VM's files: a running VM by name or id, over SFTP on its
    held connection (one channel slot of :class:`~banger.daemon.guestconn.GuestConns`
    taken for the request's duration: no login per call)."""
    vms = stack.vms

    @asynccontextmanager
    async def open_files(ref: str) -> AsyncIterator[GuestFiles]:
        vm = await asyncio.to_thread(vms.store.resolve_vm, ref)
        _require_running(vm, vms)
        async with stack.guest_conns.channel(vm) as conn, open_sftp(conn, vm.name) as files:
            yield files

    return open_files
