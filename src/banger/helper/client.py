"""The owner daemon's side of the helper protocol.

One connection per call: no shared connection state between threads or
coroutines, and a restarted helper is picked up on the next call.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from pathlib import Path
from typing import Any

from banger.errors import HelperBadInput, HelperError
from banger.helper.protocol import LineReader, ProtocolError, decode, send_line

UNREACHABLE_HINT = "is banger-helper running? see `banger doctor`"
_ids = itertools.count(1)


class HelperUnreachable(HelperError):
    """No answer from the helper: it could not be reached, or went away before replying.

    ``sent`` tells the two apart: the helper may have done a request it got
    (a tap made, then the helper killed) and never said so.
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message, hint=UNREACHABLE_HINT)
        self.sent = sent


class HelperClient:
    def __init__(self, socket_path: Path, *, timeout: float | None = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Run ``op``; its result, or :class:`HelperError` with the helper's message."""
        result, fds = self.call_with_fds(op, **args)
        for fd in fds:
            os.close(fd)
        return result

    def call_with_fds(self, op: str, **args: Any) -> tuple[dict[str, Any], list[int]]:
        """Like :meth:`call`, also returning descriptors the reply carried.

        The caller owns the descriptors (close-on-exec set; pass them to a
        child with ``pass_fds``) and must close them.
        """
        request_id = next(_ids)
        with self._connect() as sock:
            try:
                send_line(sock, {"id": request_id, "op": op, "args": args})
                reader = LineReader(sock, accept_fds=True)
                item = reader.read()
            except (OSError, ProtocolError) as exc:
                raise HelperUnreachable(f"helper {op}: {exc}", sent=True) from None
        if item is None:
            raise HelperUnreachable(f"helper closed the connection during {op}", sent=True)
        line, fds = item
        try:
            return self._result(op, request_id, line, len(fds)), fds
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    async def acall(self, op: str, **args: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.call, op, **args)

    async def acall_with_fds(self, op: str, **args: Any) -> tuple[dict[str, Any], list[int]]:
        return await asyncio.to_thread(self.call_with_fds, op, **args)

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.socket_path))
        except OSError as exc:
            sock.close()
            raise HelperUnreachable(
                f"cannot reach the root helper at {self.socket_path}: {exc.strerror or exc}",
                sent=False,
            ) from None
        return sock

    @staticmethod
    def _result(op: str, request_id: int, line: bytes, nfds: int) -> dict[str, Any]:
        try:
            reply = decode(line)
        except ProtocolError as exc:
            raise HelperError(f"helper {op}: bad reply: {exc}") from None
        if reply.get("ok") is not True:
            hint = reply.get("hint")
            cls = HelperBadInput if reply.get("bad_input") is True else HelperError
            raise cls(
                str(reply.get("error") or f"helper {op} failed"),
                hint=hint if isinstance(hint, str) else None,
            )
        if reply.get("id") != request_id:
            raise HelperError(f"helper {op}: reply id {reply.get('id')!r} != {request_id}")
        if reply.get("fds", 0) != nfds:
            raise HelperError(f"helper {op}: reply announced {reply.get('fds')} fds, got {nfds}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise HelperError(f"helper {op}: reply has no result object")
        return result
