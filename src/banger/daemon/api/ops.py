"""``/v1/ops``: operations — list, show, follow their events, and the selftest.

A long change (create, start, pull, …) answers with an operation at once; its
events are an NDJSON stream (one ``OpEvent`` per line) until it finishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from banger.api_models import Operation, SelftestRequest
from banger.daemon.selftest import check_request, run_selftest
from banger.daemon.services import Services

NDJSON = "application/x-ndjson"


def ops_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/v1/ops", tags=["ops"])
    ops = services.ops

    @router.get("")
    async def list_ops(all: bool = False) -> list[Operation]:
        """Running operations; with ``all=true`` finished ones too (newest first)."""
        return await ops.list(include_finished=all)

    @router.post("/selftest", status_code=202)
    async def selftest(request: SelftestRequest | None = None) -> Operation:
        """Diagnostic: start a harmless staged operation (optionally failing at ``fail_at``)."""
        req = request or SelftestRequest()
        check_request(req)

        async def body(op: Any) -> None:
            await run_selftest(services, req, op)

        return await ops.start("selftest", "bangerd", body)

    @router.get("/{op_id}")
    async def get_op(op_id: str) -> Operation:
        return await ops.get(op_id)

    @router.get(
        "/{op_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {NDJSON: {}}, "description": "one OpEvent per line"}},
    )
    async def op_events(op_id: str, after: int = 0) -> StreamingResponse:
        """NDJSON: the events after ``after``, then new ones live until the op finishes."""
        await ops.get(op_id)  # 404 now, before the stream starts

        async def lines() -> AsyncIterator[bytes]:
            async for event in ops.follow(op_id, after):
                yield event.model_dump_json().encode() + b"\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    return router
