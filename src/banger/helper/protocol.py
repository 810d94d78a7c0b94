"""The helper's wire format: JSON lines over a Unix stream socket.

One request per line, one reply per line, in order, on the same connection::

    {"id": 7, "op": "open_tap", "args": {"name": "bt-1a2b", "bridge": "bgbr0"}}
    {"id": 7, "ok": true, "result": {...}, "fds": 1}        (+ SCM_RIGHTS)
    {"id": 7, "ok": false, "error": "one line", "hint": "..." | null, "bad_input": bool}

A reply that hands over file descriptors sends them as ``SCM_RIGHTS``
ancillary data together with the first byte of its line and says how many in
``"fds"``. Lines are capped at :data:`MAX_LINE` bytes so a peer cannot make the
root side buffer without bound.

Stdlib only: the root helper and the owner-side client both import this.
"""

from __future__ import annotations

import array
import json
import os
import socket
from typing import Any

#: Longest accepted line, newline excluded. Requests are a few hundred bytes.
MAX_LINE = 64 * 1024
#: Most descriptors one reply may carry (a tap is one; room for multiqueue).
MAX_FDS = 8

_CHUNK = 16 * 1024


class ProtocolError(Exception):
    """The peer broke the framing (line too long, not JSON, not an object)."""


def encode(message: dict[str, Any]) -> bytes:
    """One compact JSON line, newline terminated."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    if len(data) > MAX_LINE:
        raise ProtocolError(f"message is {len(data)} bytes, over the {MAX_LINE}-byte line limit")
    return data + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line (without its newline) into a JSON object."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


def send_line(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one message; ``fds`` ride along with its first byte as SCM_RIGHTS."""
    data = encode(message)
    if not fds:
        sock.sendall(data)
        return
    if len(fds) > MAX_FDS:
        raise ProtocolError(f"too many descriptors in one reply: {len(fds)}")
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])


class LineReader:
    """Reads lines, and any descriptors that arrive with them, from one socket.

    ``accept_fds=False`` (the helper's side) closes every descriptor a peer
    sends at once: requests never carry any, and keeping them would let a
    client fill our descriptor table.
    """

    def __init__(self, sock: socket.socket, *, accept_fds: bool) -> None:
        self._sock = sock
        self._accept_fds = accept_fds
        self._buf = bytearray()
        self._fds: list[int] = []
        self._eof = False

    def read(self) -> tuple[bytes, list[int]] | None:
        """The next line (newline stripped) and the descriptors received with it.

        ``None`` at a clean end of stream. Raises :class:`ProtocolError` when a
        line exceeds :data:`MAX_LINE` or the stream ends mid-line.
        """
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                if end > MAX_LINE:
                    raise ProtocolError(f"line longer than {MAX_LINE} bytes")
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
                fds, self._fds = self._fds, []
                return line, fds
            if len(self._buf) > MAX_LINE:
                raise ProtocolError(f"line longer than {MAX_LINE} bytes")
            if self._eof:
                if self._buf:
                    raise ProtocolError("connection closed in the middle of a line")
                return None
            self._fill()

    def _fill(self) -> None:
        anc_size = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        flags = socket.MSG_CMSG_CLOEXEC if hasattr(socket, "MSG_CMSG_CLOEXEC") else 0
        data, ancdata, _msg_flags, _addr = self._sock.recvmsg(_CHUNK, anc_size, flags)
        received = _fds_from(ancdata)
        if self._accept_fds:
            self._fds.extend(received)
        else:
            for fd in received:
                os.close(fd)
        if not data:
            self._eof = True
        self._buf.extend(data)

    def close_pending(self) -> None:
        """Close descriptors received but never handed out."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _fds_from(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            usable = len(payload) - (len(payload) % arr.itemsize)
            arr.frombytes(payload[:usable])
            fds.extend(arr)
    return fds
