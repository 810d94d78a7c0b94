"""``/v1/vms/{ref}/exec``: run a command in a VM over a WebSocket (issue #17 item 2).

The WebSocket carries the framing in :data:`FRAMING` (also the OpenAPI
description of the plain ``GET`` on the same path, which answers 426: OpenAPI
has no way to describe a WebSocket route itself). The guest side is
:mod:`banger.daemon.guestexec`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from banger.api_models import ErrorBody
from banger.daemon.api.errors import error_kind
from banger.daemon.guestexec import STDERR, STDOUT, ExecSpec, GuestExec, with_image_defaults
from banger.daemon.vms.stack import VMStack
from banger.errors import BangerError, InvalidArgument
from banger.images.oci.guestenv import GuestEnv
from banger.store import VMRecord

log = logging.getLogger(__name__)

#: Largest control (text) message a client may send, in bytes.
MAX_CONTROL = 64 * 1024

FRAMING = """\
**WebSocket** (`ws://bangerd/v1/vms/{ref}/exec` over the daemon's Unix socket); a plain
GET answers 426. Frames:

1. client → daemon, first, text: the request, JSON
   `{"argv": [..]}` **or** `{"shell": "cmd | text"}` (exactly one; argv is quoted and
   exec'd, a shell string is run by `sh`), plus optional `"env": {"K": "V"}`, `"cwd"`,
   `"user"` (runs under `runuser`; a cwd or user not given is the image's `WorkingDir`
   or `User`, as with `docker exec`), `"pty": {"rows", "cols", "term"}` (stderr then
   arrives on stdout, as with any terminal), `"timeout"` (seconds; kills the command).
2. daemon → client, text: `{"type": "started", "exec_id": ".."}` (or an error, below).
3. binary frames: the first byte says the stream, the rest is data.
   client → daemon `0x00` stdin; daemon → client `0x01` stdout, `0x02` stderr.
4. client → daemon, text: `{"type": "eof"}` (close stdin), `{"type": "resize", "rows",
   "cols"}`, `{"type": "signal", "signal": "INT"}` (to the command's process group),
   `{"type": "ack", "bytes": N}`: flow control. The daemon sends at most 1 MiB of
   output not yet acknowledged and stops reading the guest until the client acks, so a
   slow reader throttles the command instead of growing buffers.
5. daemon → client, last, text: `{"type": "exit", "exit_code": N|null, "signal":
   "TERM"|null, "timed_out": bool}` then close 1000; or `{"type": "error", "error",
   "hint", "kind"}` (kind as in every error body: NotFound, Conflict, InvalidArgument…)
   then close 1011.

A client that disconnects before `exit` cancels the command: its process group and
every process it started (marked with `BANGER_EXEC_ID`) get SIGTERM, then SIGKILL.
"""


class UpgradeRequired(InvalidArgument):
    http_status = 426


class PtyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(default=24, ge=1, le=10000)
    cols: int = Field(default=80, ge=1, le=10000)
    term: str = Field(default="xterm-256color", pattern=r"^[A-Za-z0-9._+-]{1,64}$")


class ExecRequest(BaseModel):
    """The first frame of an exec WebSocket."""

    model_config = ConfigDict(extra="forbid")
    argv: list[str] | None = None
    shell: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    pty: PtyRequest | None = None
    timeout: float | None = None

    def spec(self) -> ExecSpec:
        if (self.argv is None) == (self.shell is None):
            raise InvalidArgument("argv: give exactly one of argv and shell")
        command = self.argv if self.argv is not None else self.shell
        assert command is not None
        pty = (self.pty.rows, self.pty.cols, self.pty.term) if self.pty is not None else None
        return ExecSpec(command, self.env, self.cwd, self.user, pty, self.timeout)


class _WSPeer:
    """Sends are serialized: output pumps and control replies run in different tasks."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()

    async def send_output(self, stream: int, data: bytes) -> None:
        async with self.lock:
            await self.ws.send_bytes(bytes([stream]) + data)

    async def send_control(self, message: dict[str, Any]) -> None:
        async with self.lock:
            await self.ws.send_text(json.dumps(message))

    async def receive(self) -> dict[str, Any] | bytes | None:
        """The next client message: JSON, stdin bytes, or None when the client left."""
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is not None:
            if not data or data[0] != 0:
                raise InvalidArgument("frame: binary frames from the client are 0x00 + stdin")
            return bytes(data[1:])
        return _control(message.get("text") or "")


def _control(text: str) -> dict[str, Any]:
    if len(text) > MAX_CONTROL:
        raise InvalidArgument(f"frame: control message over {MAX_CONTROL} bytes")
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidArgument("frame: a text frame must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidArgument("frame: a text frame must be a JSON object")
    return value


def exec_router(stack: VMStack) -> APIRouter:
    router = APIRouter(tags=["exec"])
    vms = stack.vms

    def _lookup(ref: str) -> tuple[VMRecord, GuestEnv | None]:
        vm = vms.store.resolve_vm(ref)
        return vm, vms._image_defaults(vm)

    @router.get(
        "/{ref}/exec",
        description=FRAMING,
        responses={426: {"model": ErrorBody, "description": "always: exec is a WebSocket"}},
    )
    async def exec_doc(ref: str) -> None:
        """Run a command in a running VM (WebSocket only; this GET answers 426)."""
        raise UpgradeRequired(
            "exec is a WebSocket: connect with an Upgrade: websocket request",
            hint="banger vm exec NAME -- CMD, or banger.client.BangerClient.exec",
        )

    @router.websocket("/{ref}/exec")
    async def exec_ws(ws: WebSocket, ref: str) -> None:
        await ws.accept()
        peer = _WSPeer(ws)
        try:
            first = await peer.receive()
            if not isinstance(first, dict):
                raise InvalidArgument("frame: the first frame must be the JSON request")
            try:
                spec = ExecRequest.model_validate(first).spec()
            except ValidationError as exc:
                raise InvalidArgument(_validation(exc)) from None
            # One hop to a worker thread for both reads (the store, the image's config).
            vm, image = await asyncio.to_thread(_lookup, ref)
            spec = with_image_defaults(spec, image)
            run = GuestExec(stack.guest_conns, vm, spec, peer)
            outcome = await run.run(peer.receive)
            await peer.send_control(outcome.message())
            await ws.close(1000)
        except BangerError as exc:
            await _send_error(peer, exc.message, exc.hint, error_kind(exc))
        except (WebSocketDisconnect, ConnectionError):
            pass  # the client left: GuestExec already killed the command

    return router


def _validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "invalid request: " + "; ".join(parts)


async def _send_error(peer: _WSPeer, message: str, hint: str | None, kind: str) -> None:
    try:
        await peer.send_control({"type": "error", "error": message, "hint": hint, "kind": kind})
        await peer.ws.close(1011)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
        pass


__all__ = ["FRAMING", "STDERR", "STDOUT", "exec_router"]
