"""Daemon-lifetime extras started next to the API: ops pruning, the VM resolver, owed taps.

``lifecycle`` starts them once the app is built and closes them on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from banger.daemon.dns_svc import DNSService
from banger.daemon.ops_retention import prune_periodically
from banger.daemon.services import Services
from banger.store import VMState

log = logging.getLogger(__name__)


@dataclass
class Background:
    dns: DNSService | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @classmethod
    def start(cls, services: Services) -> Background:
        bg = cls()
        days = services.config.daemon.ops_retention_days
        bg.tasks.append(asyncio.create_task(prune_periodically(services.store, days)))
        stack = services.stack
        # Taps a killed helper may have left: deleted as soon as a helper is back.
        bg.tasks.append(asyncio.create_task(stack.hostnet.owed.settle_periodically()))
        bg.dns = services.dns
        stack.hostnet.after_ensure.append(services.dns.ensure)
        bg.tasks.append(asyncio.create_task(bg._resume_dns(services)))
        return bg

    async def _resume_dns(self, services: Services) -> None:
        """After a daemon restart with VMs still up, serve their names again at once."""
        vms = await asyncio.to_thread(services.store.list_vms, VMState.RUNNING)
        if not vms:
            return
        try:
            await services.stack.hostnet.ensure()
        except Exception as exc:
            log.warning("could not re-ensure the bridge for DNS: %s", exc)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.dns is not None:
            await self.dns.close()
