"""``/v1/vms/{ref}/sessions/…``: a VM's sessions over the daemon API.

Every VM's sessions are listed at ``/v1/sessions`` (:mod:`banger.daemon.api.sessions`,
which also holds the session record both return).

Logs are an NDJSON stream (:class:`SessionLogEvent` per line): ``output``
events carry base64 terminal bytes (raw: ``\\r\\n``, escape sequences), and
the last event is ``end`` with the session's record once it has ended (or,
without ``follow``, its record now). An error after the stream started is an
``error`` event. Attach is not relayed: ``…/attach`` checks the session runs
and returns what the CLI needs to run ``ssh -t … tmux attach`` itself (see
:mod:`banger.guest.sessions`).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import Field

from banger.api_models import Request, Response, SSHInfo
from banger.daemon.api.sessions import SessionModel, session_model
from banger.daemon.sessions_svc import SessionService
from banger.daemon.vms.stack import VMStack
from banger.errors import BangerError
from banger.guest.sessions import LogChunk

NDJSON = "application/x-ndjson"


class SessionStartRequest(Request):
    command: list[str] = Field(min_length=1, description="The argv to run (no shell).")
    name: str | None = Field(default=None, description="Unique per VM; generated if omitted.")
    cwd: str | None = Field(default=None, description="Guest working directory; default /root.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")


class SessionSendRequest(Request):
    text: str = Field(description="Typed literally into the session's terminal.")
    enter: bool = Field(default=False, description="Press Enter afterwards.")


class SessionStopRequest(Request):
    signal: str = Field(default="TERM", description="TERM, INT, HUP, QUIT, KILL, USR1, USR2.")
    timeout: float = Field(default=10.0, description="Seconds to wait before SIGKILL.")


class SessionStopResult(Response):
    outcome: Literal["exited", "signalled", "killed"]
    session: SessionModel


class SessionAttachInfo(Response):
    ssh: SSHInfo
    session: SessionModel


class SessionLogEvent(Response):
    kind: Literal["output", "end", "error"]
    offset: int | None = None
    #: base64 of the terminal bytes (``output``)
    data: str | None = None
    session: SessionModel | None = None
    error: str | None = None
    hint: str | None = None


def session_routes(stack: VMStack, sessions: SessionService) -> APIRouter:
    router = APIRouter(tags=["sessions"])

    @router.get("/{ref}/sessions")
    async def list_vm(ref: str) -> list[SessionModel]:
        return [session_model(v) for v in await sessions.list(ref)]

    @router.post("/{ref}/sessions", status_code=201)
    async def start(ref: str, request: SessionStartRequest) -> SessionModel:
        """Start a command detached under tmux in the guest."""
        view = await sessions.start(
            ref, request.command, name=request.name, cwd=request.cwd, env=request.env
        )
        return session_model(view)

    @router.get("/{ref}/sessions/{name}")
    async def show(ref: str, name: str) -> SessionModel:
        return session_model(await sessions.show(ref, name))

    @router.get(
        "/{ref}/sessions/{name}/logs",
        response_class=StreamingResponse,
        responses={200: {"content": {NDJSON: {}}, "description": "SessionLogEvent per line"}},
    )
    async def logs(
        ref: str, name: str, tail: int | None = None, follow: bool = False
    ) -> StreamingResponse:
        """NDJSON: the output so far (last ``tail`` lines), and with ``follow`` until the end."""
        if not follow:
            data = await sessions.logs(ref, name, tail)
            view = await sessions.show(ref, name)

            async def once() -> AsyncIterator[bytes]:
                yield _line(SessionLogEvent(kind="output", offset=0, data=_b64(data)))
                yield _line(SessionLogEvent(kind="end", session=session_model(view)))

            return StreamingResponse(once(), media_type=NDJSON)
        await sessions.show(ref, name)  # 404 / 409 now, before the stream starts
        stream = sessions.follow(ref, name, tail)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for item in stream:
                    if isinstance(item, LogChunk):
                        event = SessionLogEvent(
                            kind="output", offset=item.offset, data=_b64(item.data)
                        )
                    else:
                        event = SessionLogEvent(kind="end", session=session_model(item))
                    yield _line(event)
            except BangerError as exc:
                yield _line(SessionLogEvent(kind="error", error=exc.message, hint=exc.hint))
            finally:
                await stream.aclose()

        return StreamingResponse(lines(), media_type=NDJSON)

    @router.post("/{ref}/sessions/{name}/send", status_code=204)
    async def send(ref: str, name: str, request: SessionSendRequest) -> None:
        await sessions.send(ref, name, request.text, request.enter)

    @router.post("/{ref}/sessions/{name}/stop")
    async def stop(ref: str, name: str, request: SessionStopRequest) -> SessionStopResult:
        """Signal the command's process group, wait ``timeout`` seconds, then SIGKILL."""
        outcome, view = await sessions.stop(ref, name, request.signal, request.timeout)
        return SessionStopResult(outcome=outcome, session=session_model(view))  # type: ignore[arg-type]

    @router.delete("/{ref}/sessions/{name}", status_code=204)
    async def remove(ref: str, name: str) -> None:
        """Forget a finished session (record and guest log)."""
        await sessions.remove(ref, name)

    @router.get("/{ref}/sessions/{name}/attach")
    async def attach(ref: str, name: str) -> SessionAttachInfo:
        """Check the session runs; the CLI then runs ``ssh -t … tmux attach`` itself."""
        view = await sessions.attach_check(ref, name)
        return SessionAttachInfo(ssh=await stack.vms.ssh_info(ref), session=session_model(view))

    return router


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _line(event: SessionLogEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode() + b"\n"
