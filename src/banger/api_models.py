"""The daemon API's request and response bodies, shared by bangerd and the client.

Responses ignore unknown fields when parsed (a newer daemon may add some
without breaking an older CLI); requests forbid them (a typo in a field name is
a 400 naming that field, not a silently ignored option).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Bumped when a response changes incompatibly; ``GET /v1/version`` reports it.
API_VERSION = 1

#: Operation states (the store's). A cancelled operation is ``failed`` with
#: error "cancelled: …", so there is one terminal failure state to check.
OP_PENDING = "pending"
OP_RUNNING = "running"
OP_SUCCEEDED = "succeeded"
OP_FAILED = "failed"
FINISHED_STATES = frozenset({OP_SUCCEEDED, OP_FAILED})


class Response(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(Response):
    """Every non-2xx answer: one line, an optional hint, and the error's kind.

    ``kind`` is the :class:`~banger.errors.BangerError` class name, so the client
    can raise the same class (and the CLI exit with the same code).
    """

    error: str
    hint: str | None = None
    kind: str = "BangerError"


class VersionInfo(Response):
    version: str
    api: int
    pid: int
    uid: int
    started_at: datetime


class Operation(Response):
    """One long-running piece of work (VM start, image pull, …) and where it got to."""

    id: str
    kind: str
    target: str | None = None
    state: str
    stage: str | None = None
    error: str | None = None
    hint: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


class OpEvent(Response):
    """One progress event of an operation; ``seq`` increases by one per event."""

    op_id: str
    seq: int
    at: datetime
    kind: str
    stage: str | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class VMSummary(Response):
    id: str
    name: str
    state: str
    image: str | None = None
    kernel: str | None = None
    ip: str | None = None
    created_at: datetime | None = None


class SelftestRequest(Request):
    """``POST /v1/ops/selftest``: a harmless diagnostic operation.

    It runs a few real stages (read the store, check the runtime directory,
    emit events) so clients and ``banger doctor`` can exercise the whole
    operation path; ``fail_at`` makes it fail on purpose at that stage.
    """

    fail_at: str | None = Field(default=None, description="Stage at which to fail on purpose.")
    delay_ms: int = Field(default=50, ge=0, le=5000, description="Pause between stages.")
