"""HostNetwork: the daemon's glue to the root helper's network ops.

The bridge (``network.bridge``, address = ``network.gateway``/prefix) and its
NAT rule are ensured before every VM start (both ops are idempotent and take
milliseconds); each VM gets a persistent tap ``bt-<id prefix>`` enslaved to
the bridge, handed back as an open descriptor for the VMM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from banger.config import Config
from banger.helper.client import HelperClient

log = logging.getLogger(__name__)


class HostNetwork:
    def __init__(self, config: Config, helper: HelperClient) -> None:
        self.config = config
        self.helper = helper
        #: Called after every ensure (the bridge exists then): the DNS service hooks in here.
        self.after_ensure: list[Callable[[], Awaitable[None]]] = []

    @property
    def bridge(self) -> str:
        return self.config.network.bridge

    async def ensure(self) -> None:
        net = self.config.network
        cidr = f"{net.gateway}/{net.subnet.prefixlen}"
        await self.helper.acall("ensure_bridge", name=net.bridge, cidr=cidr)
        await self.helper.acall("ensure_nat", cidr=str(net.subnet), bridge=net.bridge)
        for hook in self.after_ensure:
            await hook()

    async def open_tap(self, name: str) -> int:
        """A descriptor of the tap ``name`` on the bridge; the caller closes it."""
        _result, fds = await self.helper.acall_with_fds("open_tap", name=name, bridge=self.bridge)
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    async def delete_tap(self, name: str) -> None:
        await self.helper.acall("delete_tap", name=name)
