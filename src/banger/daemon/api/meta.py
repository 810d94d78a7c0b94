"""The ``/v1`` HTTP API: thin handlers over the services (one factory per area)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from banger import __version__
from banger.api_models import API_VERSION, Operation, SelftestRequest, VersionInfo
from banger.daemon.config_watch import RELOAD_PATH
from banger.daemon.dns_svc import DNSReport
from banger.daemon.selftest import check_request, run_selftest
from banger.daemon.services import Services
from banger.errors import BangerError, ConfigError

NDJSON = "application/x-ndjson"


class ConfigReloadRefused(ConfigError):
    """config.toml is invalid: bad input (exit 2); the last good config stays in force."""

    def __init__(self, problem: str) -> None:
        BangerError.__init__(
            self,
            problem + " (the last good config stays in force)",
            hint="run `banger config validate` to list every problem",
        )
        self.problems = [problem]


def meta_router(services: Services) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["meta"])

    @router.get("/version")
    async def version() -> VersionInfo:
        return VersionInfo(
            version=__version__,
            api=API_VERSION,
            pid=os.getpid(),
            uid=os.getuid(),
            started_at=services.started_at,
        )

    @router.get("/dns")
    async def dns() -> DNSReport:
        """The VM resolver: serving or not (and why), where, and whether the host routes it."""
        return services.dns.report()

    @router.get("/config")
    async def config() -> dict[str, Any]:
        """The configuration in force (re-read whenever config.toml changes)."""
        return services.config.to_json_dict()

    @router.post(RELOAD_PATH.removeprefix("/v1"))
    async def reload_config() -> dict[str, Any]:
        """Re-read config.toml now; an invalid file is refused and the last good one kept."""
        watch = services.config_watch
        result = await asyncio.to_thread(watch.reload)
        if result.error is not None:
            raise ConfigReloadRefused(result.error)
        data: dict[str, Any] = result.to_json(watch.path)
        return data

    return router


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
