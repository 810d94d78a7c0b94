"""HostNetwork: the daemon's glue to the root helper's network ops.

The bridge (``network.bridge``, address = ``network.gateway``/prefix) and its
NAT rule are ensured before every VM start (both ops are idempotent and take
milliseconds); each VM gets a persistent tap ``bt-<id prefix>`` enslaved to
the bridge, handed back as an open descriptor for the VMM.

:meth:`HostNetwork.teardown` removes them again (``banger system
cleanup-network``, :mod:`banger.daemon.netcleanup`); :attr:`HostNetwork.lock`
orders it against every ensure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from banger.config import Config
from banger.helper.client import HelperClient

log = logging.getLogger(__name__)


class HostNetwork:
    def __init__(self, config: Config, helper: HelperClient) -> None:
        self.config = config
        self.helper = helper
        #: Called after every ensure (the bridge exists then): the DNS service hooks in here.
        self.after_ensure: list[Callable[[], Awaitable[None]]] = []
        #: Taken by every ensure and by the network cleanup for its check and
        #: teardown: a start that begins during a cleanup waits and then makes
        #: the bridge again, instead of losing it between its ensure and its tap.
        self.lock = asyncio.Lock()

    @property
    def bridge(self) -> str:
        return self.config.network.bridge

    async def ensure(self) -> None:
        net = self.config.network
        cidr = f"{net.gateway}/{net.subnet.prefixlen}"
        async with self.lock:
            await self.helper.acall("ensure_bridge", name=net.bridge, cidr=cidr)
            await self.helper.acall("ensure_nat", cidr=str(net.subnet), bridge=net.bridge)
            for hook in self.after_ensure:
                await hook()

    async def teardown(self) -> dict[str, Any]:
        """The helper's ``teardown_network`` for our bridge; the caller holds :attr:`lock`."""
        return await self.helper.acall("teardown_network", bridge=self.bridge)

    async def open_tap(self, name: str) -> int:
        """A descriptor of the tap ``name`` on the bridge; the caller closes it."""
        _result, fds = await self.helper.acall_with_fds("open_tap", name=name, bridge=self.bridge)
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    async def delete_tap(self, name: str) -> None:
        await self.helper.acall("delete_tap", name=name)
