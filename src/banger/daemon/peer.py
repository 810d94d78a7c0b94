"""bangerd answers its owner only: ``SO_PEERCRED`` on every connection.

The first lock is the socket's file mode (0600, the owner's, inside a 0700
runtime directory). This is the second, for when the first is gone wrong (an
owner who loosened a mode, a group-shared runtime directory): a connection
whose peer is neither the owner nor root gets one ``403`` and is closed before
a byte of its request is read. Root is let in because it could read the
owner's files anyway (``sudo banger`` against the owner's daemon).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct

from uvicorn.protocols.http.auto import AutoHTTPProtocol

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


def refusal(uid: int) -> bytes:
    body = json.dumps(
        {"error": f"permission denied: uid {uid} is not this daemon's owner", "code": 403}
    ).encode()
    head = (
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def owner_only(owner_uid: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, refusing every peer but ``owner_uid`` and root."""

    class OwnerOnlyHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        refused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                pid, uid, _gid = peer_credentials(sock)
                if uid not in (owner_uid, 0):
                    self.refused = True
                    log.warning("refused connection from pid=%d uid=%d: not the owner", pid, uid)
                    assert isinstance(transport, asyncio.WriteTransport)
                    transport.write(refusal(uid))
                    transport.close()  # stops reading: the request is never parsed
                    return
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            if not self.refused:
                super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.refused:  # nothing of uvicorn's was set up for this one
                super().connection_lost(exc)

    return OwnerOnlyHTTP
