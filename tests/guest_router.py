"""One "guest" per Firecracker stand-in: route each stand-in's vsock to its own agent.

The stand-in's guest listener (``BANGER_STANDIN_VSOCK_GUEST=<port>=<socket>``) is
one socket for every stand-in process a test starts. A fork or a pool runs
several VMs at once, each to be re-identified by its own guest, so the tests
point that listener at this router: for each connection it asks the kernel
which process connected (``SO_PEERCRED``), reads that stand-in's ``--api-sock``
from ``/proc/<pid>/cmdline`` (``vm-<id>.fc`` in banger's runtime directory:
:meth:`banger.paths.Paths.vm_firecracker_socket`), and joins the connection
to the guest ``route`` names for that VM — a real ``qemu-ga`` in namespaces
(:mod:`tests.namespace_guest`). A VM with no guest gets its connection
closed, as a guest that listens on nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path


def peer_api_socket(conn: socket.socket) -> Path | None:
    """The connecting stand-in's ``--api-sock`` (None if it has none or is gone)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for flag, value in itertools.pairwise(argv):
        if flag == b"--api-sock":
            return Path(value.decode())
    return None


def vm_id_of(api_socket: Path) -> str:
    """The VM id in a plain Firecracker's API socket name (``vm-<id>.fc``)."""
    name = api_socket.name
    if not (name.startswith("vm-") and name.endswith(".fc")):
        return ""
    return name.removeprefix("vm-").removesuffix(".fc")


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


@asynccontextmanager
async def guest_router(
    listen: Path, route: Callable[[str], Path | None]
) -> AsyncIterator[list[tuple[str, Path | None]]]:
    """Serve ``listen``; ``route(vm_id)`` is the guest agent socket for that VM's
    connections. Yields the list of (vm id, guest socket) routed so far."""
    routed: list[tuple[str, Path | None]] = []
    open_writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        api = peer_api_socket(writer.get_extra_info("socket"))
        vm_id = vm_id_of(api) if api is not None else ""
        guest = route(vm_id) if vm_id else None
        routed.append((vm_id, guest))
        if guest is None:
            writer.close()
            return
        try:
            g_reader, g_writer = await asyncio.open_unix_connection(str(guest))
        except OSError:
            writer.close()
            return
        open_writers.update((writer, g_writer))
        try:
            await asyncio.gather(_pump(reader, g_writer), _pump(g_reader, writer))
        finally:
            for w in (writer, g_writer):
                open_writers.discard(w)
                w.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await w.wait_closed()

    server = await asyncio.start_unix_server(serve, path=str(listen))
    try:
        yield routed
    finally:
        server.close()
        for w in list(open_writers):  # the pumps then end on their own
            w.close()
        await asyncio.sleep(0)
        listen.unlink(missing_ok=True)
