"""``/v1/sessions``: every VM's sessions, and the session record the API returns.

A VM's own sessions (start, show, logs, send, stop, remove, attach) are under
``/v1/vms/{ref}/sessions`` (:mod:`banger.daemon.api.vms.sessions`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import Field

from banger.api_models import Response
from banger.daemon.sessions_svc import SessionService, SessionView
from banger.daemon.vms.stack import VMStack


class SessionModel(Response):
    vm: str
    name: str
    command: list[str]
    state: Literal["running", "exited", "lost"]
    exit_status: int | None = Field(description="The exit status; 128+N after signal N.")
    started_at: datetime
    ended_at: datetime | None


def session_model(view: SessionView) -> SessionModel:
    record = view.record
    return SessionModel(
        vm=view.vm,
        name=record.name,
        command=list(record.command),
        state=view.state,  # type: ignore[arg-type]  # shown_state returns one of the three
        exit_status=record.exit_status,
        started_at=record.started_at,
        ended_at=record.ended_at,
    )


def session_router(sessions: SessionService) -> APIRouter:
    router = APIRouter(prefix="/v1/sessions", tags=["sessions"])

    @router.get("")
    async def list_all(vm: str | None = None) -> list[SessionModel]:
        """Every session (or one VM's), reconciled with the guests first."""
        return [session_model(v) for v in await sessions.list(vm)]

    return router


async def reconcile_sessions_at_start(stack: VMStack) -> int:
    """Daemon start: sessions that ended or were lost while the daemon was away."""
    return await SessionService(stack.vms).reconcile_all()
