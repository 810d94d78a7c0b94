"""bangerd answers its owner only: ``SO_PEERCRED`` on every connection.

The first lock is the socket's file mode (0600, the owner's, inside a 0700
runtime directory). This is the second, for when the first is gone wrong (an
owner who loosened a mode, a group-shared runtime directory): a connection
whose peer is neither the owner nor root gets one ``403`` and is closed; its
request is read and dropped, never parsed. Root is let in because it could
read the owner's files anyway (``sudo banger`` against the owner's daemon).
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

#: Seconds, and bytes, a refused peer's input is read and dropped before the close.
REFUSAL_DRAIN = 5.0
REFUSAL_DRAIN_LIMIT = 64 * 1024


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


class Refusal:
    """One refused connection: the 403 at once, then its input drained until EOF or a bound.

    Closing at once is not enough. A client sends its request right after
    connecting (the kernel accepts before bangerd does), and a close that
    beats that send makes the send fail with EPIPE, so the client never reads
    the 403 waiting for it; a close with unread input resets the connection.
    So the 403 is written, the write side shut (the peer reads the 403, then
    EOF), and whatever the peer sends is read and dropped until it closes —
    or until :data:`REFUSAL_DRAIN` seconds or :data:`REFUSAL_DRAIN_LIMIT`
    bytes, so a stranger cannot hold the connection open. Nothing is parsed.
    """

    def __init__(self, transport: asyncio.Transport, uid: int) -> None:
        self.transport = transport
        self.left = REFUSAL_DRAIN_LIMIT
        transport.write(refusal(uid))
        transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSAL_DRAIN, transport.close)

    def drop(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left <= 0:
            self.transport.close()

    def ended(self) -> None:
        self.timer.cancel()


def owner_only(owner_uid: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, refusing every peer but ``owner_uid`` and root."""

    class OwnerOnlyHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
        refused: Refusal | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                pid, uid, _gid = peer_credentials(sock)
                if uid not in (owner_uid, 0):
                    log.warning("refused connection from pid=%d uid=%d: not the owner", pid, uid)
                    assert isinstance(transport, asyncio.Transport)
                    self.refused = Refusal(transport, uid)
                    return  # uvicorn never sees this connection
            super().connection_made(transport)

        # Everything uvicorn's protocol would do below needs the state its
        # connection_made sets up, which a refused connection never got.
        def data_received(self, data: bytes) -> None:
            if self.refused is None:
                super().data_received(data)
            else:
                self.refused.drop(data)

        def eof_received(self) -> None:
            if self.refused is None:
                super().eof_received()
            # A refused peer's EOF: returning None lets asyncio close the transport.

        def pause_writing(self) -> None:
            if self.refused is None:
                super().pause_writing()

        def resume_writing(self) -> None:
            if self.refused is None:
                super().resume_writing()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.refused is None:
                super().connection_lost(exc)
            else:
                self.refused.ended()

    return OwnerOnlyHTTP
