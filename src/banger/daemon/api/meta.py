"""``/v1/version``, ``/v1/dns``, ``/v1/config``, ``/v1/config/reload``: the daemon itself."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter

from banger import __version__
from banger.api_models import API_VERSION, VersionInfo
from banger.daemon.config_watch import RELOAD_PATH
from banger.daemon.dns_svc import DNSReport
from banger.daemon.services import Services
from banger.errors import BangerError, ConfigError


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
