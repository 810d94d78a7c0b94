"""One HTTP/1.1 exchange over a connected socket: what banger's client needs, nothing more.

The CLI pays for every module it imports on every command, and the standard
library's ``http.client`` brings ``email`` and ``ssl`` along (20-30 ms of a
~130 ms ``banger vm list``). bangerd is banger's own uvicorn on a Unix socket,
so the client needs little: send one request with ``Connection: close``, read
the status line and headers, and read a body framed by ``Content-Length``,
``Transfer-Encoding: chunked`` (uvicorn's streaming responses) or the end of
the connection. Anything else is :class:`ProtocolError`, which callers treat
like a lost connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Mapping
from io import BufferedReader

#: Bounds for what the other side sends: a header line, the header count, a chunk-size line.
MAX_LINE = 65536
MAX_HEADERS = 100
_NO_BODY = (204, 304)


class ProtocolError(Exception):
    """The answer was not HTTP/1.1 as bangerd speaks it (or stopped half-way)."""


def _head(method: str, target: str, headers: Mapping[str, str]) -> list[str]:
    """The request line and headers (``Host`` and ``Connection: close`` added), checked."""
    for text in (method, target, *headers, *headers.values()):
        if any(c in text for c in "\r\n\0") or (text in (method, target) and " " in text):
            raise ValueError(f"refusing to send a header or request line with {text!r}")
    lines = [f"{method} {target} HTTP/1.1", "Host: bangerd", "Connection: close"]
    return lines + [f"{name}: {value}" for name, value in headers.items()]


def send_request(
    sock: socket.socket,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
) -> None:
    """Write one request; ``Host``, ``Connection: close`` and ``Content-Length`` are added."""
    lines = _head(method, target, headers)
    if body is not None or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body or b'')}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))


def send_request_stream(
    sock: socket.socket,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: Iterable[bytes],
    length: int | None = None,
) -> None:
    """Write one request whose body comes in pieces: ``Content-Length`` when ``length``
    is known (the pieces must add up to it), else ``Transfer-Encoding: chunked``."""
    lines = _head(method, target, headers)
    chunked = length is None
    lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    for piece in body:
        if not piece:
            continue
        sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


class Response:
    """Status, headers (names lower-cased) and the body, read once: :meth:`read` or iterate."""

    def __init__(self, stream: BufferedReader, status: int, reason: str, headers: dict[str, str]):
        self._stream = stream
        self.status = status
        self.reason = reason
        self.headers = headers
        self._consumed = False

    def read(self) -> bytes:
        """The whole body."""
        return b"".join(self._pieces())

    def __iter__(self) -> Iterator[bytes]:
        """The body's lines, each with its ``\\n`` (the last one may lack it)."""
        pending = b""
        for piece in self._pieces():
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if pending:
            yield pending

    def iter_bytes(self) -> Iterator[bytes]:
        """The body as it arrives, in pieces of whatever size (for streamed downloads)."""
        return self._pieces()

    def _pieces(self) -> Iterator[bytes]:
        if self._consumed:
            raise ProtocolError("the response body was already read")
        self._consumed = True
        if self.status in _NO_BODY or 100 <= self.status < 200:
            return
        encoding = self.headers.get("transfer-encoding", "").lower()
        if encoding:
            if encoding != "chunked":
                raise ProtocolError(f"unsupported transfer-encoding {encoding!r}")
            yield from self._chunked()
            return
        length = self.headers.get("content-length")
        if length is None:
            while piece := self._stream.read1(65536):
                yield piece
            return
        if not length.isdigit():
            raise ProtocolError(f"bad content-length {length!r}")
        remaining = int(length)
        while remaining:
            piece = self._stream.read1(min(remaining, 65536))
            if not piece:
                raise ProtocolError(f"the body ended {remaining} bytes early")
            remaining -= len(piece)
            yield piece

    def _chunked(self) -> Iterator[bytes]:
        while True:
            size_line = _line(self._stream).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
            if size < 0:
                raise ProtocolError("negative chunk size")
            if size == 0:
                while _line(self._stream) not in (b"\r\n", b"\n"):
                    pass  # trailers: none of them matter here
                return
            data = self._stream.read(size)
            if len(data) != size:
                raise ProtocolError("the body ended inside a chunk")
            if _line(self._stream) not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk did not end with CRLF")
            yield data


def _line(stream: BufferedReader) -> bytes:
    line = stream.readline(MAX_LINE + 1)
    if not line:
        raise ProtocolError("the connection closed mid-response")
    if len(line) > MAX_LINE:
        raise ProtocolError("a response line is too long")
    return line


def read_response(stream: BufferedReader) -> Response:
    """Read the status line and headers from ``stream`` (a socket's ``makefile("rb")``)."""
    status_line = _line(stream).rstrip(b"\r\n").decode("latin-1")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0") or not (len(code) == 3 and code.isdigit()):
        raise ProtocolError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(stream).rstrip(b"\r\n")
        if not line:
            return Response(stream, int(code), reason, headers)
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.lower()
        # Repeated headers: joined, as HTTP allows for list-valued ones.
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    raise ProtocolError(f"more than {MAX_HEADERS} headers")
